"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.data.geometry import make_frame_pairs
from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import Scenes, WIDTH
from helpers.data.scene_pairs import make_scene_pair_dataset
from helpers.data.scenes import TYPE_NAMES
from helpers.stages import words
from helpers.reports.sampling import (describe_answer, describe_ratios, describe_recall, describe_type_coverage,
                                      describe_wrap, make_metrics, make_ratio_table, make_sampling_panel,
                                      plot_pairs_per_frame, plot_reduction_recall, plot_seam_losses, plot_sweep)
from helpers.stages.sampling import (evaluate_sampling_counts, make_dataset_card, make_pairs_per_frame_table,
                                     make_presets_table, make_recall_table, make_sweep_table, make_type_groups_table)


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"

@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)

W = WIDTH

@pytest.fixture(scope="module")
def gen() -> Scenes:
    """Generated scenes, loaded in memory without touching the cache."""
    import pandas as pd

    p, _ = make_generated_people(n_sequences=5, frames_per_sequence=12, seed=3)
    p = p.assign(cx=np.mod(p["x"] + p["w"] / 2, W), y_bottom=p["y"] + p["h"], occlusion=p["occlusion"],
                 no_eval=False, vx=0.0, vy=0.0)
    p = p.sort_values(["seq", "frame", "track"]).reset_index(drop=True)
    p["fid"] = pd.factorize(pd.MultiIndex.from_arrays([p["seq"], p["frame"]]), sort=True)[0]
    return Scenes(people=p, sequences=[f"s{i}" for i in range(5)], generated=True, source="generated (test)")


def test_sweep_table_on_fixture(tiny):
    pairs = make_frame_pairs(tiny.people["fid"].to_numpy(), tiny.people["cx"].to_numpy(),
                                      tiny.people["w"].to_numpy(), tiny.people["group"].to_numpy())
    sw = make_sweep_table(pairs, [1, 2, 3, 6])
    on, off = sw[sw["wrap"]], sw[~sw["wrap"]]
    assert np.all(np.diff(on["frac_kept"]) >= 0) and np.all(np.diff(on["positive_recall"]) >= 0)
    assert np.all(on["positive_recall"].to_numpy() >= off["positive_recall"].to_numpy())
    assert off.loc[off["distance_multiplier"] == 3, "seam_positives_lost"].item() == 2
    assert on["seam_positives_lost"].eq(0).all()
    c = evaluate_sampling_counts(pairs, 3.0, 5, True)
    assert c["positive_recall"] == pytest.approx(on.loc[on["distance_multiplier"] == 3, "positive_recall"].item())


def test_tables_and_plots(tiny, gen):
    import matplotlib

    matplotlib.use("Agg")
    s = make_pair_sample(gen, 3.0)
    rt = make_ratio_table(s)
    assert rt.loc["+ balanced (final)", "pairs"] == len(s.y)
    pairs = make_frame_pairs(gen.people["fid"].to_numpy(), gen.people["cx"].to_numpy(),
                                      gen.people["w"].to_numpy(), gen.people["group"].to_numpy())
    sw = make_sweep_table(pairs)
    ppf = make_pairs_per_frame_table(gen, pairs, s)
    assert ppf["sampled pairs"].sum() == len(s.y)
    pt = make_presets_table(gen)
    assert list(pt.index) == ["quick", "standard", "high quality"]
    for fig in (plot_reduction_recall(sw, 3.0), plot_sweep(sw), plot_seam_losses(sw),
                plot_pairs_per_frame(ppf), make_sampling_panel(pairs, sw, interactive=False)):
        assert fig.axes
    panel = make_sampling_panel(pairs, sw, interactive=True)
    assert len(panel.children) == 2
    sliders, (image, table) = panel.children[0].children, panel.children[1].children
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "139255.0000" not in table.value
    sliders[0].value, sliders[1].value = 4.0, 2            # two quick changes: the picture is replaced each time
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n" and image.value != first
    counts = [c for c in table.value.split("<td>")[1:]]
    assert any(c.split("<")[0].replace(",", "").isdigit() for c in counts), "counts print as integers"


def _pipeline(scenes, cap=5, ratio=1.0):
    s = make_pair_sample(scenes, 3.0, True, True, 1.0, cap, ratio, seed=0)
    ds = make_scene_pair_dataset(scenes, s, 0.2, 0.2, seed=0)
    return s, ds


def test_ratio_table_names_the_step_that_changes_the_ratio(gen):
    s, _ = _pipeline(gen, cap=1)
    t = make_ratio_table(s)
    assert {"step", "ratio change"} <= set(t.columns)
    r = t["positives per negative"].to_numpy()
    assert t.loc["+ negatives capped per frame", "ratio change"].startswith(f"x{r[3] / r[2]:.3g}")
    # Cap 1 leaves fewer negatives than positives: balancing trims positives, and says so.
    assert "positives" in t.loc["+ balanced (final)", "step"] and r[4] == pytest.approx(1.0)
    assert t.loc["+ balanced (final)", "positives"] == s.counts["positives"] == int(s.y.sum())
    line = describe_ratios(s)
    assert "'negatives capped per frame'" in line and f"{r[1]:.3g}" in line


def test_recall_table_and_type_groups(gen):
    s, ds = _pipeline(gen)
    rec = make_recall_table(gen, s, ds)
    assert list(rec.index) == ["train", "val", "test", "all"]
    assert rec.loc["all", "interacting pairs"] == s.counts["all_positives"]
    assert rec.loc["all", "reach training"] == int(s.y.sum())
    for k, a in ds.items():
        assert rec.loc[k, "reach training"] == int(a["y"].sum())
    body = rec.drop("all")
    assert body["interacting pairs"].sum() == rec.loc["all", "interacting pairs"]
    assert np.all(rec["interacting pairs"] >= rec["after distance rule"])
    assert np.all(rec["after group sampling"] >= rec["reach training"])
    assert np.allclose(rec["end-to-end recall"], rec["reach training"] / rec["interacting pairs"])
    assert np.all(rec["recall incl. inferred"] >= rec["end-to-end recall"] - 1e-12)
    assert "end-to-end recall" in describe_recall(rec)
    groups = make_type_groups_table(gen, s, ds)
    assert list(groups.columns) == ["sequences", *TYPE_NAMES] and list(groups.index) == ["train", "val", "test"]
    assert groups["sequences"].sum() == len(gen.sequences)
    assert describe_type_coverage(groups, min_groups=0).startswith("Every split holds")
    assert describe_type_coverage(groups, min_groups=10_000).startswith("NOT in this profile")
    m = make_metrics(gen, {"candidate_frac_kept": 0.2, "positive_recall": 0.8, "seam_positives_lost_without_wrap": 1,
                           "seam_positives_lost_frac": 0.01}, s, ds, rec, groups)
    assert m["end_to_end_recall"] == pytest.approx(rec.loc["all", "end-to-end recall"])
    assert m["end_to_end_recall_test"] == pytest.approx(rec.loc["test", "end-to-end recall"])
    assert m["type_min_groups_per_split"] == int(groups[list(TYPE_NAMES)].to_numpy().min())
    at = {"candidate_frac_kept": 0.2, "positive_recall": 0.8, "seam_positives_lost_without_wrap": 1}
    answer = describe_answer(at, s, rec, groups, 3.0)
    assert len(words.sentences(answer)) <= 4 and len(answer.split()) <= 90
    assert f"{rec.loc['all', 'end-to-end recall']:.1%}" in answer and f"{at['positive_recall']:.1%}" in answer


def test_dataset_card_carries_the_leakage_check(gen):
    s, ds = _pipeline(gen)
    card = make_dataset_card(gen, s, ds, seed=0)
    assert card["data_leakage_prevention"] is True
    chk = card["leakage_check"]
    assert chk["passed"] is True and set(chk["sequences_shared"]) == {"train-val", "train-test", "val-test"}
    assert sum(chk["sequences_per_split"].values()) == len(gen.sequences)


def test_describe_wrap_reads_the_curves(tiny):
    pairs = make_frame_pairs(tiny.people["fid"].to_numpy(), tiny.people["cx"].to_numpy(),
                             tiny.people["w"].to_numpy(), tiny.people["group"].to_numpy())
    line = describe_wrap(make_sweep_table(pairs, [1, 2, 3, 6]), 3.0)
    assert line.startswith("At 3× the wrap keeps 2 more interacting pairs")
    assert any(w in line for w in ("above the wrap-on", "below the wrap-on", "within 1 point"))
