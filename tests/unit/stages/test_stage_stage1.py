"""Notebook 02's stage module on small pair folders: the user's own data, data with classes, scene-like data."""
import json

import numpy as np
import pytest
import torch

from helpers.core.errors import DataError
from helpers.evaluation.stats import ROWS, Unit, holm
from helpers.stages.stage1 import (describe_answer, describe_recall, describe_run, evaluate_against_baselines,
                                   evaluate_scene_recall, make_display_table, make_metrics, make_recall_table,
                                   make_summary_table, run_stage1, run_stage1_datasets)


torch.set_num_threads(1)


PARAMS = dict(seed=0, epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_epochs=0, patience=0,
              monitor="accuracy", layers=[1, 1], width_mult=0.125, feat_dim=8, mlp_hidden=[8], augment=True,
              label_smoothing=0.0, max_grad_norm=1.0, threshold=0.5, lgbm_estimators=5, num_threads=1, log_every=0,
              lgbm_leaves_grid=[4], lgbm_lr_grid=[0.1], logreg_c_grid=[0.1, 1.0], svm_c_grid=[10.0],
              svm_gamma_grid=[0.5, 1.0], cnn_epochs=1, cnn_layers=[1], cnn_width_mult=0.125)

BASELINES = ("svm_compare", "cnn_compare", "1nn", "logreg", "lgbm")


def _pair_folder(folder, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for fname, n in (("train.npz", 64), ("val.npz", 32), ("test_public.npz", 32)):
        y = np.arange(n) % 2
        xa = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        xb = np.where(y[:, None, None] == 1, xa, rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)).astype(np.uint8)
        np.savez(folder / fname, xa=xa, xb=xb, y=y)
    return folder


def _class_folder(folder, seed=0, n_img=24):
    """Images of 3 classes (noisy prototypes) with ids and classes: classify-then-compare can run."""
    rng = np.random.default_rng(seed)
    proto = rng.random((3, 8, 8)).astype(np.float32)
    folder.mkdir(parents=True)
    for s, (fname, n) in enumerate((("train.npz", 64), ("val.npz", 32), ("test_public.npz", 48))):
        ids = np.arange(n_img) + 1000 * s
        cls = np.arange(n_img) % 3
        img = np.clip(proto[cls] + 0.1 * rng.standard_normal((n_img, 8, 8)), 0, 1).astype(np.float32)
        ia, ib = rng.integers(0, n_img, n), rng.integers(0, n_img, n)
        same = np.arange(n) % 2 == 0            # half the pairs forced to the same class
        ib[same] = [rng.choice(np.flatnonzero(cls == cls[a])) for a in ia[same]]
        np.savez(folder / fname, xa=img[ia], xb=img[ib], y=(cls[ia] == cls[ib]).astype(int), ida=ids[ia],
                 idb=ids[ib], ca=cls[ia], cb=cls[ib])
    return folder


def _scene_folder(folder, all_pairs=None, seed=0):
    """Vector pairs with sequence and track ids (scene-like: the unit is the person pair)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for s, (fname, n) in enumerate((("train.npz", 80), ("val.npz", 40), ("test_public.npz", 40))):
        y = np.arange(n) % 2
        xa = rng.standard_normal((n, 5)).astype(np.float32)
        xb = (xa * y[:, None] + rng.standard_normal((n, 5)) * (1 - y[:, None])).astype(np.float32)
        np.savez(folder / fname, xa=xa, xb=xb, y=y, pair=rng.standard_normal((n, 2)).astype(np.float32),
                 seq=np.full(n, s), track_a=np.arange(n) % 7, track_b=np.arange(n) % 7 + 10)
    meta = {"split_method": "by_sequence", "generated": True, "source": "test scenes"}
    if all_pairs is not None:
        meta["all_interacting_pairs"] = all_pairs
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_user_uint8_folder_without_ids_through_stage1(tmp_path):
    """A user's own NPZ folder (uint8 images [N, H, W], no ids, no classes) trains and is scored by notebook
    02's code; without classes the 1-NN baseline works on whole pairs and classify-then-compare is skipped."""
    folder = _pair_folder(tmp_path / "my_pairs")
    run = run_stage1(str(folder), tmp_path, tmp_path / "out", PARAMS)
    assert run.name == "my_pairs" and run.kind == "image" and run.epochs_run == 1
    for f in ("best_accuracy.pt", "final.pt", "history.json", "evaluation_report.txt", "config.json",
              "predictions/stage1.npz", "predictions/baseline_lgbm.npz", "predictions/baseline_logreg.npz",
              "predictions/baseline_1nn.npz"):
        assert (tmp_path / "out" / "my_pairs" / f).is_file(), f
    assert not (tmp_path / "out" / "my_pairs" / "predictions" / "baseline_svm_compare.npz").exists()
    assert set(run.baselines) == {"1nn", "logreg", "lgbm"} and not run.has_classes
    assert run.baselines["1nn"]["info"]["mode"].startswith("label of the nearest training pair")
    assert 0 <= run.eval_test["accuracy"] <= 1 and run.baselines["logreg"]["test"]["accuracy"] > 0.7
    assert run.unit is ROWS and "row bootstrap" in run.test_ci["method"]
    assert "need them and did not run" in describe_run(run)
    m = make_metrics({run.name: run})["my_pairs"]
    assert "baseline_classify_compare_acc" not in m
    assert m["baseline_1nn_acc"] == run.baselines["1nn"]["test"]["accuracy"]
    card = json.loads((tmp_path / "out" / "my_pairs" / "config.json").read_text())
    assert card["classify_then_compare"].startswith("not run") and card["statistics"]["unit"] == "row"


def test_classes_run_every_baseline_and_compare_by_source_image(tmp_path):
    folder = _class_folder(tmp_path / "cls")
    run = run_stage1(str(folder), tmp_path, tmp_path / "out", PARAMS)
    assert run.has_classes and list(run.baselines) == list(BASELINES)
    pred = tmp_path / "out" / "cls" / "predictions"
    for name in BASELINES:
        z = np.load(pred / f"baseline_{name}.npz")
        assert np.array_equal(z["test_y"], run.test_y) and len(z["val_prob"]) == len(run.val_y)
        assert str(z["selected_on"]) == ("none" if name == "1nn" else "val")
    # noisy copies of three prototypes: the SVM and 1-NN see through them
    assert run.baselines["svm_compare"]["test"]["accuracy"] > 0.9 and run.baselines["1nn"]["test"]["accuracy"] > 0.9
    test = np.load(folder / "test_public.npz")
    assert run.unit.name == "source image"
    assert run.test_ci["n_units"] == len(np.unique(np.concatenate([test["ida"], test["idb"]])))
    assert "dyadic" in run.test_ci["method"] and run.eval_test["acc_ci_low"] == run.test_ci["ci_low"]
    m = make_metrics({run.name: run})["cls"]
    val_acc = {n: run.baselines[n]["val"]["accuracy"] for n in ("svm_compare", "cnn_compare")}
    choice = m["baseline_classify_compare_choice"]
    assert val_acc[choice] == max(val_acc.values())
    assert m["baseline_classify_compare_acc"] == run.baselines[choice]["test"]["accuracy"]
    best = max(run.baselines, key=lambda n: run.baselines[n]["val"]["accuracy"])
    assert run.baselines[m["best_baseline"]]["val"]["accuracy"] == run.baselines[best]["val"]["accuracy"]
    assert m["vs_best_baseline_p"] == run.comparisons[m["best_baseline"]]["p_holm"]
    assert m["vs_best_baseline_p"] >= m["vs_best_baseline_p_unadjusted"]
    assert m["test_acc_ci_method"] == run.test_ci["method"] and m["test_acc_unit"] == "source image"
    report = (tmp_path / "out" / "cls" / "evaluation_report.txt").read_text()
    assert "Wilson" not in report and "by source image" in report and "Holm" in report


def test_comparisons_holm_adjust_and_take_their_words_from_the_paired_test():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    stage1 = np.where(rng.random(400) < 0.6, y, 1 - y).astype(float)            # 60% right
    baselines = {"perfect": {"test_prob": y.astype(float)}, "same": {"test_prob": stage1.copy()},
                 "coin": {"test_prob": rng.integers(0, 2, 400).astype(float)}}
    comp = evaluate_against_baselines(y, stage1, baselines, 0.5, ROWS)
    raw = [c["test"]["p_value"] for c in comp.values()]
    assert [c["p_holm"] for c in comp.values()] == holm(raw)
    assert comp["perfect"]["verdict"].startswith("stage 1 worse") and comp["perfect"]["test"]["diff"] < -0.3
    assert comp["same"]["verdict"].startswith("not distinguishable") and comp["same"]["test"]["diff"] == 0
    assert "Holm-adjusted over 3 baselines" in comp["coin"]["verdict"]
    assert comp["perfect"]["ci"]["mean"] == 1.0


def test_scene_recall_counts_dropped_pairs_as_misses(tmp_path):
    run = run_stage1(str(_scene_folder(tmp_path / "scn", {"train": 100, "val": 50, "test": 80})), tmp_path,
                     tmp_path / "out", PARAMS)
    assert run.unit.name == "person pair" and not run.has_classes
    r = run.recall["stage 1 model"]
    assert r["n_sampled"] == 20 and r["n_all"] == 80 and r["share_sampled"] == 0.25
    assert r["all"]["mean"] == pytest.approx(r["sampled"]["mean"] * 0.25)
    assert r["all"]["ci_low"] <= r["all"]["mean"] <= r["all"]["ci_high"]
    tp = int(((run.test_prob >= 0.5) & (run.test_y == 1)).sum())
    assert r["all"]["mean"] == pytest.approx(tp / 80)
    assert len(run.recall) == 2 and make_recall_table({run.name: run}).shape[0] == 2
    assert "the 60 the sampling dropped counted as misses" in describe_recall({run.name: run})
    m = make_metrics({run.name: run})["scn"]
    assert m["test_recall_all_pairs"] == pytest.approx(tp / 80) and m["test_all_interacting_pairs"] == 80


def test_scene_recall_without_the_count_says_it_cannot_be_computed(tmp_path):
    run = run_stage1(str(_scene_folder(tmp_path / "scn")), tmp_path, tmp_path / "out", PARAMS)
    r = run.recall["stage 1 model"]
    assert r["n_all"] is None and r["all"] is None
    assert "cannot be computed" in describe_recall({run.name: run})
    assert make_metrics({run.name: run})["scn"]["test_recall_all_pairs"] is None
    text, _ = describe_answer({run.name: run})
    assert "cannot be computed" in text


@pytest.mark.parametrize("counts,message", [
    ({"train": 1, "val": 1, "test": 5}, r"'all_interacting_pairs.test' = 5 is below the 20 interacting pairs"),
    ({"train": 1, "val": 1}, r"'all_interacting_pairs' = .*; expected"),
    ({"train": 1, "val": 1, "test": 2.5}, r"expected"),
])
def test_scene_recall_refuses_a_bad_count(tmp_path, counts, message):
    from helpers.data.pairs import load_pair_folder

    splits = load_pair_folder(_scene_folder(tmp_path / "scn", counts))
    prob = np.full(len(splits.test), 0.9)
    with pytest.raises(DataError, match=message):
        evaluate_scene_recall(splits, prob, 0.5, Unit("person pair", (np.arange(len(prob)),)))


def test_answer_tables_and_two_folders_with_the_same_name(tmp_path, capsys):
    a, b = _pair_folder(tmp_path / "a" / "x"), _class_folder(tmp_path / "b" / "x", seed=1)
    (b / "sub").mkdir()                                   # b/x/sub/.. is b/x: its name is x, not ".."
    runs = run_stage1_datasets([str(a), str(b) + "/sub/.."], tmp_path, tmp_path / "out", PARAMS)
    assert list(runs) == ["x", "x-2"]
    assert "the second is reported as x-2" in capsys.readouterr().out
    metrics = make_metrics(runs)
    assert set(metrics) == {"x", "x-2"}
    for name in ("x", "x-2"):
        assert (tmp_path / "out" / name / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x", "x-2"]
    text, headline = describe_answer(runs)
    assert 2 <= text.count(". ") + 1 <= 4 and len(headline) == 3
    assert headline["x: stage 1 test acc"] == round(runs["x"].eval_test["accuracy"], 4)
    assert f"{runs['x'].eval_test['accuracy']:.3f}" in text and "Holm-adjusted" in text
    full = make_summary_table(runs)
    assert full.shape[0] == 1 + 3 + 1 + 5 and {"p (Holm)", "val acc", "test ROC-AUC"} <= set(full.columns)
    shown = make_display_table(full)
    assert shown.shape[0] == full.shape[0] and "verdict (paired test, Holm)" in shown.columns
