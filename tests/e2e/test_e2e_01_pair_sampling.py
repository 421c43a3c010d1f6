"""Notebook 01 in the smoke run: headline metrics, the pair datasets, the widget fallback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.core import paths
from helpers.data.jrdb import write_jrdb_layout
from helpers.data.pairs import load_pair_dataset
from helpers.data.scene_generator import make_generated_people
from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e

STEM = "01_pair_sampling"


@pytest.fixture(scope="module")
def metrics(smoke_run):
    return read_metrics(smoke_run, STEM)


def test_metrics_keys(metrics):
    for key in ("candidate_frac_kept", "positive_recall", "seam_positives_lost_without_wrap", "pos_neg_ratio_before",
                "pos_neg_ratio_after", "n_pairs_train", "n_pairs_val", "n_pairs_test", "generated",
                "pos_neg_ratio_after_group_sampling", "pos_neg_ratio_after_cap", "end_to_end_recall",
                "end_to_end_recall_test", "recall_incl_inferred", "type_min_groups_per_split"):
        assert key in metrics, key
    assert metrics["generated"] is True


def _params(smoke_run):
    return json.loads((smoke_run / "run.json").read_text())["notebooks"][STEM]["parameters"]


def test_distance_rule_numbers(metrics):
    # At 3x the wider box width the rule must remove most pairs yet keep most interacting pairs
    # (JRDB reference at 200-400 px: 19-31% kept, 82-93% of same-group pairs kept; 3x a box of about 50 px
    # is 150 px, a little tighter, and the generated pairs added for type coverage are sometimes loose).
    assert 0.05 < metrics["candidate_frac_kept"] < 0.5
    assert 0.7 <= metrics["positive_recall"] <= 1.0
    assert metrics["seam_positives_lost_without_wrap"] >= 0
    assert 0 <= metrics["seam_positives_lost_frac"] < 0.2


def test_sampling_raises_the_positive_share(metrics):
    # Capping negatives per frame must move the ratio towards the positives.
    assert 0 < metrics["pos_neg_ratio_before"] < metrics["pos_neg_ratio_after"]
    assert 0.5 < metrics["pair_reduction_vs_all"] < 1.0


def test_each_step_moves_the_ratio_its_own_way(smoke_run, metrics):
    # Group sampling removes positives (lowers positives per negative); the cap removes negatives (raises it);
    # balancing lands exactly on stage1_balance_ratio negatives per positive, from either side.
    assert metrics["pos_neg_ratio_after_group_sampling"] < metrics["pos_neg_ratio_before"]
    assert metrics["pos_neg_ratio_after_cap"] > 2 * metrics["pos_neg_ratio_after_group_sampling"]
    assert metrics["pos_neg_ratio_after"] == pytest.approx(1 / _params(smoke_run)["stage1_balance_ratio"], rel=0.01)
    html = (smoke_run / STEM / f"{STEM}.html").read_text()
    assert "The step that changes it most is &#x27;negatives capped per frame&#x27;" in html or \
        "The step that changes it most is 'negatives capped per frame'" in html


def test_end_to_end_recall(smoke_run, metrics):
    splits = load_pair_dataset("scene_pairs", smoke_run)
    n_all = splits.meta["all_interacting_pairs"]
    assert set(n_all) == {"train", "val", "test"}
    counts = splits.meta["counts"]
    assert sum(n_all.values()) == counts["all_positives"], "the splits share out every interacting pair"
    for name, s in splits.items():
        assert n_all[name] >= int(s.y.sum()) > 0
        assert metrics[f"end_to_end_recall_{name}"] == pytest.approx(s.y.sum() / n_all[name])
    assert metrics["end_to_end_recall"] == pytest.approx(counts["positives"] / counts["all_positives"])
    # Nothing can reach training that the distance rule dropped; balancing and group sampling drop more.
    assert 0.02 < metrics["end_to_end_recall"] < metrics["positive_recall"]
    assert metrics["end_to_end_recall"] <= metrics["recall_incl_inferred"] <= 1.0
    assert (smoke_run / STEM / "ratio_table.csv").stat().st_size > 200


def test_type_coverage_is_reported(smoke_run, metrics):
    splits = load_pair_dataset("scene_pairs", smoke_run)
    # The generator gives every sequence at least one group of every type, so even the smoke splits (one
    # sequence for val and for test) hold every type; 10 per split is out of reach there and the report says so.
    assert metrics["type_min_groups_per_split"] >= 1
    for _, s in splits.items():
        assert set(np.unique(s.extras["type"][s.y == 1])) == {0, 1, 2, 3, 4}
    html = (smoke_run / STEM / f"{STEM}.html").read_text()
    said = "NOT in this profile" in html
    assert said == (metrics["type_min_groups_per_split"] < 10)


def test_pair_datasets_split_by_sequence(smoke_run, metrics):

    splits = load_pair_dataset("scene_pairs", smoke_run)
    assert splits.kind == "vector" and splits.generated
    seqs = [set(s.extras["seq"].tolist()) for _, s in splits.items()]
    assert not (seqs[0] & seqs[1] or seqs[0] & seqs[2] or seqs[1] & seqs[2]), "a sequence in two splits"
    assert [len(s) for _, s in splits.items()] == [metrics["n_pairs_train"], metrics["n_pairs_val"],
                                                    metrics["n_pairs_test"]]
    for _, s in splits.items():
        assert len(s) > 0
        assert s.xa.shape == s.xb.shape and s.xa.shape[1] == len(splits.meta["feature_names"])
        assert s.extras["pair"].shape == (len(s), len(splits.meta["pair_feature_names"]))
        t = s.extras["type"]
        assert np.all((t >= 0) == (s.y == 1)) and t.max() <= 4
    assert 0.2 < splits.train.y.mean() < 0.9, "stage 1 needs both classes"
    assert metrics["n_types_train"] >= 2


def test_run_card_and_figures(smoke_run):
    out = smoke_run / STEM
    card = json.loads((out / "config.json").read_text())
    assert card["dataset"]["split_method"] == "by_sequence" and card["dataset"]["generated"] is True
    chk = card["dataset"]["leakage_check"]
    assert card["dataset"]["data_leakage_prevention"] is chk["passed"] is True
    assert set(chk["sequences_shared"].values()) == {0} and set(chk["person_ids_shared"].values()) == {0}
    assert sum(chk["sequences_per_split"].values()) == _params(smoke_run)["n_sequences"]
    assert min(chk["person_ids_per_split"].values()) > 0
    meta = json.loads((out / "scene_pairs" / "meta.json").read_text())
    assert meta["data_leakage_prevention"] is True and meta["leakage_check"] == chk
    for name in ("reduction_vs_recall.png", "seam_losses.png", "pairs_per_frame.png"):
        assert (out / name).stat().st_size > 1000


def test_report_opens_with_its_answer(smoke_run, metrics):
    out = smoke_run / STEM
    answer = json.loads((out / "answer.json").read_text())
    assert f"{metrics['end_to_end_recall']:.1%}" in answer["answer"] and f"{metrics['positive_recall']:.1%}" in answer["answer"]
    assert answer["headline"]["end-to-end recall"] == pytest.approx(metrics["end_to_end_recall"])
    html = (out / f"{STEM}.html").read_text()
    assert html.index('id="Answer"') < html.index('id="Do-the-scenes-look-like-JRDB')


def test_widget_falls_back_to_a_static_figure(smoke_run):
    nb = json.loads((smoke_run / STEM / f"{STEM}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "make_sampling_panel" in "".join(c["source"]))
    images = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
    assert len(images) == 1, "one static figure under papermill"


def test_jrdb_root_is_read_through_the_same_loader(tmp_path):
    """A folder in the JRDB layout (here: generated scenes without the 'generated' marker, standing in for a
    user's JRDB copy) drives notebook 01 through `jrdb_root`, and the run says it used that folder."""
    import subprocess
    import sys


    people, _ = make_generated_people(n_sequences=5, frames_per_sequence=30, seed=7)
    root = tmp_path / "my_jrdb"
    write_jrdb_layout(people, root, source="test copy", seed=7)
    (root / "GENERATED.json").unlink()
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "helpers", "run", "--profile", "smoke", "--only", "01", "--out",
                           str(out), "--set", f"01_pair_sampling.jrdb_root={root}"],
                          cwd=paths.PROJ_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    m = json.loads((out / "01_pair_sampling" / "metrics.json").read_text())
    card = json.loads((out / "01_pair_sampling" / "config.json").read_text())
    assert m["generated"] is False
    assert str(root) in json.dumps(card["dataset"])
    assert m["n_pairs_train"] > 0 and (out / "01_pair_sampling" / "scene_pairs" / "train.npz").is_file()
