"""Inputs that cannot be numbers or boxes are refused naming the row and column (issue 22): each case
was accepted (with overflow warnings, inf targets) or ended in a MemoryError on f1e8d3d."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from helpers.core.errors import DataError
from helpers.core.taskspec import make_task_specs
from helpers.data.jrdb import load_jrdb
from helpers.data.tables import load_task_table
from tests.unit.data.test_tables import ROWS, _write_table

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"


@pytest.mark.parametrize("box, col", [([10, 20, 1e308, 30], "w"), ([1e308, 20, 5, 30], "x"),
                                      ([10, -1e300, 5, 30], "y"), ([10, 20, 5, 2e6], "h")])
def test_a_jrdb_box_beyond_any_panorama_is_refused_naming_record_and_column(tmp_path, box, col):
    root = tmp_path / "jrdb"
    shutil.copytree(FIXTURE, root)
    path = root / "labels" / "labels_2d_stitched" / "seq_a.json"
    obj = json.loads(path.read_text())
    obj["labels"]["000001.jpg"][1]["box"] = box
    path.write_text(json.dumps(obj))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no overflow warning on the way to the error
        with pytest.raises(DataError, match=rf"seq_a\.json: frame '000001\.jpg', record 1 .*box {col} = "):
            load_jrdb(root)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), "inf", "1e999"])
def test_a_regression_target_that_is_not_finite_is_refused_naming_the_row(tmp_path, bad):
    rows = [dict(r) for r in ROWS]
    rows[4]["age"] = bad
    specs = make_task_specs(["age:regression"])
    with pytest.raises(DataError, match=r"column 'age' \(regression\) holds non-numbers: row 5 is"):
        load_task_table(_write_table(tmp_path, rows), specs)


@pytest.mark.parametrize("label, tasks, match", [
    (10**12, ["grade:multiclass:10"], r"row 3: class label 1000000000000 is outside 0..9 \(the task declares 10"),
    (10**12, ["grade:multiclass"], r"row 3: class label 1000000000000 is outside 0..99999"),
    (10, ["grade:multiclass:10"], r"row 3: class label 10 is outside 0..9"),
    ("inf", ["grade:multiclass"], r"row 3: class label inf is outside"),
])
def test_class_labels_beyond_the_declared_count_are_refused_naming_the_row(tmp_path, label, tasks, match):
    rows = [dict(r, grade=i % 3) for i, r in enumerate(ROWS)]
    rows[2]["grade"] = label
    with pytest.raises(DataError, match=match):
        load_task_table(_write_table(tmp_path, rows), make_task_specs(tasks))


def test_in_range_integer_labels_still_load(tmp_path):
    rows = [dict(r, grade=i % 3) for i, r in enumerate(ROWS)]
    t = load_task_table(_write_table(tmp_path, rows), make_task_specs(["grade:multiclass:10"]))
    assert t.tasks[0].num_classes == 10


def test_01_on_two_sequences_of_two_frames_reports_the_sampling_and_why_no_datasets(tmp_path):
    from helpers.reports import sampling as sampling_report
    from helpers.stages import sampling

    sc = sampling.select_keyframes(sampling.load_scenes(str(FIXTURE)), 1)
    assert len(sc.sequences) == 2
    sample = sampling.make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds, unsplittable = sampling.make_scene_pair_datasets(sc, sample, 0.2, 0.2, 0)
    assert "No pair datasets are written: 2 sequence(s) with at most 2 frame(s)" in unsplittable
    assert len(ds["train"]["y"]) == len(sample.y) and len(ds["val"]["y"]) == len(ds["test"]["y"]) == 0
    meta = sampling.make_dataset_meta(sc, sample, ds)
    assert sampling.write_scene_pair_datasets(ds, tmp_path / "scene_pairs", meta, unsplittable) is None
    assert not (tmp_path / "scene_pairs").exists()
    recall = sampling.make_recall_table(sc, sample, ds)
    groups = sampling.make_type_groups_table(sc, sample, ds)
    at = sampling.evaluate_at_multiplier(sampling.make_scene_pairs(sc), 3.0)
    metrics = sampling_report.make_metrics(sc, at, sample, ds, recall, groups, unsplittable)
    assert metrics["pair_datasets_written"] is False and metrics["n_pairs_val"] == 0
    answer = sampling_report.describe_answer(at, sample, recall, groups, 3.0, unsplittable=unsplittable)
    assert "No pair datasets are written" in answer and "nan" not in answer
    recall_text = sampling_report.describe_recall(recall)
    assert "val not measured (no pairs)" in recall_text and "nan" not in recall_text
