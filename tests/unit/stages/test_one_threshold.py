"""One threshold (issue 23): a model is scored at the threshold its notebook declared wherever it is scored
again. A model trained from 02's recipe, which declared 0.3, is scored by 02's scoring function, by 04 (the
member's metrics and the correctness its comparisons use) and by 05 (the base-model table and the best-single
reference): the same test accuracy everywhere, and not the accuracy at 0.5."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.core.io import atomic_savez
from helpers.data.pairs import load_pair_folder
from helpers.data.predictions import load_base_predictions, load_threshold
from helpers.evaluation.metrics import correct, evaluate_binary
from helpers.evaluation.stacking import BEST, evaluate_stacking, STACK
from helpers.stages.multiseed import _correct_of, make_grid, train_member
from tests.unit.stages.test_stage_multiseed import _fake_run

THRESHOLD = 0.3        # what 02 declared in this fixture: not the default


def _pairs(folder, rng, n_src=48):
    """8x8 image pairs split by source image, a quarter of them positive (brighter images, by a random amount: a
    signal a few epochs pick up), so that a model's probabilities spread across 0.3 and 0.5."""
    offset = 0
    for fname, n in (("train.npz", 96), ("val.npz", 40), ("test_public.npz", 80)):
        y = np.tile([0, 0, 0, 1], n // 4)
        ids = rng.integers(offset, offset + n_src, (2, n))
        shift = (0.6 * y * rng.random(n)).astype(np.float32)[:, None, None, None]    # some positives barely brighter
        atomic_savez(folder / fname, xa=rng.random((n, 1, 8, 8), dtype=np.float32) + shift,
                     xb=rng.random((n, 1, 8, 8), dtype=np.float32) + shift, y=y, ida=ids[0], idb=ids[1])
        offset += n_src


def test_one_model_has_one_test_accuracy_in_02_04_and_05_at_a_declared_threshold(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "pairs"
    data.mkdir()
    _pairs(data, np.random.default_rng(4))
    run, _ = _fake_run(tmp_path, threshold=THRESHOLD)
    specs = make_grid({"stage1": [1, 2]}, str(data), run, run / "04_multi_seed", {"stage1": {"recipe": "02_stage1"}},
                      label="pairs", train={"epochs": 3, "batch_size": 16, "patience": 0, "lr": 1e-2})
    assert [s.threshold for s in specs] == [THRESHOLD] * 2               # 04 takes the threshold 02 declared
    metrics = [train_member(s) for s in specs]
    te = load_pair_folder(data).test
    member = Path(specs[0].out_dir)
    with np.load(member / "predictions.npz") as z:
        prob = z["test_prob"]
    acc_02 = evaluate_binary(te.y, prob, THRESHOLD)["accuracy"]         # how 02 scores its model
    # The fixture must tell the thresholds apart, else this test could not catch a literal 0.5.
    assert acc_02 != pytest.approx(evaluate_binary(te.y, prob, 0.5)["accuracy"])
    # 04: the member's metrics.json and the per-pair correctness its comparisons and tuning test use
    assert metrics[0]["test_acc"] == pytest.approx(acc_02)
    assert json.loads((member / "metrics.json").read_text())["test_acc"] == pytest.approx(acc_02)
    assert _correct_of(member).mean() == pytest.approx(acc_02)
    assert load_threshold(specs[0].predictions_path) == THRESHOLD       # recorded for 05
    # 05: the base-model table and the best-single reference score the same file at the same threshold
    base = load_base_predictions(run, str(data), sources=["04_multi_seed"], label="pairs")
    assert base.threshold == THRESHOLD
    res = evaluate_stacking(base, splits=load_pair_folder(data), grid="tiny", n_folds=2, max_rounds=20, n_boot=100,
                            sklearn_stacking=False)
    table = res.base_table.set_index("model")["test_acc"]
    assert table[f"04_multi_seed/{specs[0].name}"] == pytest.approx(acc_02)
    assert table[f"04_multi_seed/{specs[1].name}"] == pytest.approx(metrics[1]["test_acc"])
    c = res.comparison.set_index("method")["test_acc"]
    assert c[BEST] == pytest.approx(table[res.best_single])
    # the stacked probabilities are of the same label: scored at the same declared threshold
    assert c[STACK] == pytest.approx(correct(res.test_pred[STACK], te.y, THRESHOLD).mean())


def test_no_literal_half_threshold_is_left_where_04_and_05_score():
    root = Path(__file__).resolve().parents[3] / "helpers"
    files = [root / "stages" / "multiseed.py", root / "stages" / "stacking.py", root / "reports" / "multiseed.py",
             root / "reports" / "stacking.py", *[root / "evaluation" / f"{m}.py" for m in (
                 "stacking", "distillation", "ensemble_inference", "leakage")]]
    assert all(f.is_file() for f in files), files
    hits = [f"{f.name}:{i}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if re.search(r">=\s*0\.5\b", line)]
    assert not hits, f"scored at a literal 0.5 instead of the declared threshold: {hits}"
