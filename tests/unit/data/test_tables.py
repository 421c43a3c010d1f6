"""Unit tests of helpers/data/tables.py (notebook 06): task specs, the table loader, the built-in digit
table with measured targets, and the redundancy check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.core.errors import DataError, WorkbookError
from helpers.core.taskspec import make_task_specs
from helpers.data.tables import (DEFAULT_TASKS, DIGIT_TASKS, evaluate_split, evaluate_task_redundancy,
                                 load_table_tensors, load_task_table, make_digit_task_table, make_image_properties,
                                 make_subject_split, TaskTable)


TASKS = make_task_specs(DEFAULT_TASKS)

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------ table
def _write_table(tmp_path, rows: list[dict], images: bool = True, name: str = "t.csv"):
    (tmp_path / "img").mkdir(exist_ok=True)
    if images:
        for r in rows:
            Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / r["image"])
    df = pd.DataFrame(rows)
    path = tmp_path / name
    (df.to_excel if name.endswith(".xlsx") else df.to_csv)(path, index=False)
    return path

ROWS = [{"image": f"img/{i}.png", "subject": f"s{i // 2}", "grade": ["low", "mid", "high"][i % 3],
         "spots": ["no", "yes"][i % 2], "age": 20.0 + i} for i in range(12)]

SPECS = make_task_specs(["grade:multiclass", "spots:binary", "age:regression"])


# ------------------------------------------------------------------------------------------ tasks
def test_task_specs_parse_and_reject():
    assert [(t.name, t.kind, t.out_dim) for t in TASKS] == [("digit", "multiclass", 10), ("parity", "binary", 1),
                                                             ("loops", "multiclass", 3)]
    w = make_task_specs(["a:binary", "b:regression"], [2.0, 0.5])
    assert [t.weight for t in w] == [2.0, 0.5] and w[1].out_dim == 1
    for bad in (["a:ternary"], ["a"], ["a:binary:3"], ["a:binary", "a:regression"], []):
        with pytest.raises(WorkbookError):
            make_task_specs(bad)
    with pytest.raises(WorkbookError, match="one weight per task"):
        make_task_specs(["a:binary", "b:binary"], [1.0])


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_user_table_csv_and_excel(tmp_path, fmt):
    rows = [dict(r) for r in ROWS]
    rows[3]["grade"] = None          # a missing label stays missing (NaN), not a class
    path = _write_table(tmp_path, rows, name=f"t.{fmt}")
    t = load_task_table(path, SPECS)
    assert t.n_images == 12 and t.n_subjects == 6
    assert t.classes["grade"] == ["high", "low", "mid"] and t.tasks[0].num_classes == 3
    assert t.classes["spots"] == ["no", "yes"]
    assert np.isnan(t.frame["grade"].iloc[3]) and t.frame["age"].iloc[5] == 25.0
    split = make_subject_split(t, 0.2, 0.2, seed=1)
    by_subject = pd.Series(split).groupby(t.frame["subject"]).nunique()
    assert (by_subject == 1).all(), "a subject never spans two splits"
    assert evaluate_split(t, split)["subjects_in_other_splits"].sum() == 0
    data = load_table_tensors(t, split, 16)
    assert data.x["train"].shape[1:] == (3, 16, 16) and data.y["train"].shape[1] == 3
    assert "age" in data.reg_mean and data.reg_std["age"] > 0


def test_bad_tables_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_task_table(tmp_path / "nope.csv", SPECS)
    path = _write_table(tmp_path, ROWS)
    with pytest.raises(DataError, match=r"missing column\(s\) \['shape'\]"):
        load_task_table(path, make_task_specs(["shape:binary"]))
    with pytest.raises(DataError, match="missing column"):
        load_task_table(path, SPECS, subject_col="patient")
    bad = [dict(r, spots=["a", "b", "c"][i % 3]) for i, r in enumerate(ROWS)]
    with pytest.raises(DataError, match="binary column 'spots' has 3 values"):
        load_task_table(_write_table(tmp_path, bad, name="b.csv"), SPECS)
    bad = [dict(r, age="old") for r in ROWS]
    with pytest.raises(DataError, match="'age' \\(regression\\) holds non-numbers"):
        load_task_table(_write_table(tmp_path, bad, name="c.csv"), SPECS)
    with pytest.raises(DataError, match="declares 2"):
        load_task_table(path, make_task_specs(["grade:multiclass:2"]))
    missing = [dict(r, image=f"img/missing{i}.png") for i, r in enumerate(ROWS)]
    with pytest.raises(DataError, match="12 image file\\(s\\) not found"):
        load_task_table(_write_table(tmp_path, missing, images=False, name="d.csv"), SPECS)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported extension"):
        load_task_table(tmp_path / "t.json", SPECS)


def test_image_properties_measure_ink_and_slant():
    img = np.zeros((4, 9, 9))
    img[0, :, 4] = 1.0                                   # a vertical bar: no slant
    img[1, np.arange(9), 8 - np.arange(9)] = 1.0         # top right to bottom left: leans right, one column per row
    img[2, np.arange(9), np.arange(9)] = 0.5             # top left to bottom right: leans left, half intensity
    p = make_image_properties(img)                       # img[3] is blank
    assert p["ink"] == pytest.approx([9.0, 9.0, 4.5, 0.0])
    assert p["slant"] == pytest.approx([0.0, 1.0, -1.0, 0.0])
    # Central moments: the slant does not depend on where the stroke sits or how dark it is.
    small = np.zeros((1, 12, 12))
    small[0, 2 + np.arange(6), 9 - np.arange(6)] = 3.0
    assert make_image_properties(small)["slant"] == pytest.approx([1.0])


def test_digit_table_is_real_digits_with_measured_tasks(tmp_path):
    from sklearn.datasets import load_digits

    csv = make_digit_task_table(tmp_path / "digits")
    assert make_digit_task_table(tmp_path / "digits") == csv, "built once, then reused"
    t = load_task_table(csv, make_task_specs(DIGIT_TASKS))
    d = load_digits()
    assert t.n_images == len(d.target) == t.n_subjects, "each image is its own subject"
    f = t.frame
    assert (f["digit"].to_numpy() == d.target).all()
    assert not {"parity", "loops"} & set(pd.read_csv(csv).columns), "no task that is a function of the label"
    img = np.asarray(Image.open(f["path"].iloc[7]))
    assert img.shape == (8, 8) and np.allclose(img, np.rint(d.images[7] * 255 / 16))
    # The targets are measured from the saved pixels themselves.
    pixels = np.stack([np.asarray(Image.open(p_)) for p_ in f["path"].iloc[:50]]) / 255.0
    props = make_image_properties(pixels)
    assert np.allclose(f["ink"].iloc[:50], props["ink"], atol=1e-5)
    assert np.allclose(f["slant"].iloc[:50], props["slant"], atol=1e-5)
    # And they carry information the label does not: the digit explains little of ink, about half of slant.
    red = evaluate_task_redundancy(t).set_index(["task", "vs"])
    assert red.loc[("ink", "digit"), "eta_squared"] < 0.1
    assert 0.3 < red.loc[("slant", "digit"), "eta_squared"] < 0.6
    assert abs(red.loc[("slant", "ink"), "pearson_r"]) < 0.1


def test_redundancy_flags_a_task_that_is_a_function_of_another():
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 10, 500)
    frame = pd.DataFrame({"path": "x", "subject": np.arange(500).astype(str), "digit": digit.astype(float),
                          "parity": (digit % 2).astype(float), "noise": rng.normal(size=500),
                          "mean_of_class": digit * 2.0 + 1})
    tasks = make_task_specs(["digit:multiclass:10", "parity:binary", "noise:regression", "mean_of_class:regression"])
    red = evaluate_task_redundancy(TaskTable(frame, tasks, {}, "test", Path("test.csv"))).set_index(["task", "vs"])
    assert red.loc[("parity", "digit"), "cramers_v"] == pytest.approx(1.0)
    assert red.loc[("mean_of_class", "digit"), "eta_squared"] == pytest.approx(1.0)
    assert red.loc[("noise", "digit"), "eta_squared"] < 0.05
    assert red.loc[("digit", "parity"), "cramers_v"] == pytest.approx(1.0)
    assert ("mean_of_class", "noise") in red.index and np.isnan(red.loc[("mean_of_class", "noise"), "eta_squared"])
