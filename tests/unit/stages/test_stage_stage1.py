"""Notebook 02's stage module on small pair folders: the user's own data, data with classes, scene-like data."""
import json

import numpy as np
import pytest
import torch

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.data.crops import (check_scene_split, load_pair_scenes, make_candidate_split, make_pair_crops,
                                make_scene_inputs)
from helpers.data.geometry import make_candidates
from helpers.data.jrdb import load_scenes
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.pairs import load_pair_folder
from helpers.data.scene_pairs import make_dataset_meta, make_scene_pair_dataset, write_pair_dataset
from helpers.data.scenes import select_keyframes
from helpers.evaluation.groups import SIZE_CLASSES
from helpers.evaluation.scene_kinds import make_crop_train_config
from helpers.evaluation.recall import evaluate_scene_recall
from helpers.evaluation.stats import ROWS, Unit, holm
from helpers.stages.words import sentences
from helpers.reports.stage1 import (describe_answer, describe_groups, describe_kinds, describe_recall, describe_run,
                                    make_display_table, make_groups_table, make_kinds_card, make_kinds_table,
                                    make_metrics, make_recall_table, make_summary_table)
from helpers.stages.stage1 import evaluate_against_baselines, run_stage1, run_stage1_datasets


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
    # the report names each interval's method (over source images), never a Wilson interval over pairs
    assert "Wilson" not in report and "interval over 22 source images" in report and "Holm" in report


def test_comparisons_holm_adjust_and_take_their_words_from_the_paired_test():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    stage1 = np.where(rng.random(400) < 0.6, y, 1 - y).astype(float)            # 60% right
    baselines = {"perfect": {"test_prob": y.astype(float)}, "same": {"test_prob": stage1.copy()},
                 "coin": {"test_prob": rng.integers(0, 2, 400).astype(float)}}
    comp = evaluate_against_baselines(y, stage1, baselines, 0.5, ROWS)
    raw = [max(c["test"]["p_value"], 1 / 2000) for c in comp.values()]   # a 0 enters at its floor, 1 / resamples
    assert [c["p_holm"] for c in comp.values()] == holm(raw)
    assert comp["perfect"]["verdict"].startswith("stage 1 worse") and comp["perfect"]["test"]["diff"] < -0.3
    assert comp["same"]["verdict"].startswith("not distinguishable") and comp["same"]["test"]["diff"] == 0
    assert "Holm over 3" in comp["coin"]["verdict"]
    t = comp["coin"]["test"]                               # the adjusted interval is beside the adjusted verdict
    assert t["ci_low_adjusted"] <= t["ci_low"] and t["ci_high_adjusted"] >= t["ci_high"]
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
    # a scene folder whose meta.json does not say where its scenes are: only geometry, no groups, and why
    assert list(run.scene.kinds) == ["geometry"] and run.scene.groups is None
    assert "does not record the scenes" in describe_kinds({run.name: run})
    m = make_metrics({run.name: run})["scn"]
    assert m["geometry"]["test_acc"] == m["test_acc"] and m["group_f1"] is None and "appearance" not in m
    r = run.recall["stage 1 model"]
    assert r["n_all"] is None and r["all"] is None
    assert "cannot be computed" in describe_recall({run.name: run})
    assert make_metrics({run.name: run})["scn"]["test_recall_all_pairs"] is None


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
    assert len(sentences(text)) <= 4 and len(text.split()) <= 90 and len(headline) == 3
    assert headline["x: stage 1 test acc"] == round(runs["x"].eval_test["accuracy"], 4)
    for run in runs.values():                   # each dataset's accuracy, difference and verdict are stated
        c = run.comparisons[run.best_baseline]["test"]
        assert f"{run.eval_test['accuracy']:.1%}" in text and f"{100 * c['diff']:+.1f} " in text
        assert {"better": "stage 1 better", "worse": "stage 1 worse"}.get(c["verdict_word"], c["verdict_word"]) in text
    full = make_summary_table(runs)
    assert full.shape[0] == 1 + 3 + 1 + 5 and {"p (Holm)", "val acc", "test ROC-AUC"} <= set(full.columns)
    shown = make_display_table(full)
    assert shown.shape[0] == full.shape[0] and "verdict (paired test, Holm)" in shown.columns


# ------------------------------------------------------------------ scene pairs with images (notebook 01's way)
SCENE_PARAMS = dict(PARAMS, crop_size=[16, 8], crop_epochs=1, crop_layers=[1], crop_width_mult=0.125,
                    crop_stem_stride=1, crop_backbone="", crop_backbone_weights="",
                    scene_inputs=["geometry", "appearance", "both"])


@pytest.fixture(scope="module")
def scene_images(tmp_path_factory):
    """Generated scenes with their panoramas (4 sequences, 31 frames, every 3rd kept: keyframes 15 and 30 are
    among them) sampled and written by notebook 01's functions, under a private cache."""
    tmp = tmp_path_factory.mktemp("scenes")
    mp = pytest.MonkeyPatch()
    mp.setattr(paths, "CACHE", tmp / "cache")
    sc = select_keyframes(load_scenes(None, n_sequences=4, frames_per_sequence=31, seed=3, render_stride=3), 3)
    sample = make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(sc, sample, 0.25, 0.25, seed=0)
    folder = write_pair_dataset(ds, tmp / "scene_pairs", make_dataset_meta(sc, sample, ds))
    yield folder, sc
    mp.undo()


def _copy_with_meta(folder, dst, **changes):
    import shutil

    shutil.copytree(folder, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta["scene_source"].update(changes)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def test_meta_records_the_scenes_and_they_load_again_exactly(scene_images):
    folder, sc = scene_images
    src = json.loads((folder / "meta.json").read_text())["scene_source"]
    assert src["keyframe_stride"] == 3 and src["generator"]["n_sequences"] == 4 and src["n_images"] == sc.n_images > 0
    again = load_pair_scenes(src)
    assert again.people[["seq", "frame", "track"]].equals(sc.people[["seq", "frame", "track"]])
    splits = load_pair_folder(folder)
    assert check_scene_split(again, splits.test, "test") == len(splits.test)
    assert load_pair_scenes(src, images=False).n_images == 0
    with pytest.raises(DataError, match="differ from those notebook 01 sampled"):
        load_pair_scenes({**src, "frames_digest": "0" * 16})
    with pytest.raises(DataError, match="scene_source"):
        load_pair_scenes(None)
    moved = splits.test
    moved.extras["track_b"] = moved.extras["track_a"].copy()          # person b is now person a: cues differ
    with pytest.raises(DataError, match="cue vectors of person b"):
        check_scene_split(again, moved, "test")


def test_candidate_split_holds_every_same_frame_candidate_and_the_sampled_pairs(scene_images):
    folder, sc = scene_images
    splits = load_pair_folder(folder)
    seqs = np.unique(splits.test.extras["seq"]).tolist()
    cand = make_candidate_split(sc, seqs, 3.0, True)
    p = sc.people[sc.people["seq"].isin(seqs)]
    i, _ = make_candidates(p["fid"].to_numpy(), p["cx"].to_numpy(), p["w"].to_numpy(), 3.0, True, sc.width)
    assert len(cand["y"]) == len(i) > len(splits.test)
    key = lambda s, f, a, b: set(zip(s.tolist(), f.tolist(), np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))
    sampled = key(splits.test.extras["seq"], splits.test.extras["frame"], splits.test.extras["track_a"],
                  splits.test.extras["track_b"])
    assert sampled <= key(cand["seq"], cand["frame"], cand["track_a"], cand["track_b"])
    assert check_scene_split(sc, cand, "candidates") == len(cand["y"])      # the same cues and pair features
    crops = make_pair_crops(sc, {"test": splits.test, "cand": cand}, (16, 8))
    ra, rb = crops.rows["cand"]
    assert crops.crops.dtype == np.uint8 and crops.crops.shape[1:] == (3, 16, 8)
    assert len(crops.crops) == len(np.unique(np.r_[ra, rb, *crops.rows["test"]]))  # each person once
    assert [a.shape for a in make_scene_inputs("both", cand, crops.rows["cand"])] == \
        [(len(ra),), (len(ra),), cand["pair"].shape]
    assert len(make_scene_inputs("geometry", splits.test)) == 3
    with pytest.raises(WorkbookError, match="crop rows"):
        make_scene_inputs("appearance", cand)


def test_scene_kinds_side_by_side_then_groups_from_all_candidate_pairs(scene_images, tmp_path):
    folder, sc = scene_images
    run = run_stage1(str(folder), tmp_path, tmp_path / "out", SCENE_PARAMS)
    sk = run.scene
    assert list(sk.kinds) == ["geometry", "appearance", "both"] and sk.n_images == sc.n_images
    out = tmp_path / "out" / folder.name
    for kind in ("appearance", "both"):
        assert (out / kind / "best_accuracy.pt").is_file() and (out / kind / "history.json").is_file()
        z = np.load(out / "predictions" / f"stage1_{kind}.npz")
        assert np.array_equal(z["test_prob"], sk.kinds[kind].test_prob)
        assert sk.kinds[kind].model_spec["name"] == "siamese_crops"
    assert sk.kinds["both"].model_spec["kwargs"]["pair_dim"] == 13 and sk.kinds["appearance"].model_spec["kwargs"]["pair_dim"] == 0
    # kinds against each other and against LightGBM: one Holm family, verdicts from the paired tests
    assert set(sk.comparisons) == {"appearance - geometry", "both - geometry", "both - appearance",
                                   "geometry - lgbm", "appearance - lgbm", "both - lgbm"}
    assert [c["p_holm"] for c in sk.comparisons.values()] == holm([max(c["test"]["p_value"], 1 / 2000)
                                                                   for c in sk.comparisons.values()])
    acc = {k: kr.eval_test["accuracy"] for k, kr in sk.kinds.items()}
    assert sk.comparisons["both - geometry"]["test"]["diff"] == pytest.approx(acc["both"] - acc["geometry"])
    assert sk.kinds[sk.best_kind].eval_val["accuracy"] == max(kr.eval_val["accuracy"] for kr in sk.kinds.values())
    # groups from the chosen kind over every candidate pair of the val and test frames, official files written
    g = sk.groups
    assert g["kind"] == sk.best_kind and g["n_candidates"]["candidates_test"] > len(run.test_y)
    det = (out / "groups" / "det_group.txt").read_text().splitlines()
    assert det and len(det) == len((out / "groups" / "gt_group.txt").read_text().splitlines())
    assert all(len(line.split(" ")) == 9 for line in det)
    m = make_metrics({run.name: run})[run.name]
    for kind in sk.kinds:
        assert m[kind]["test_acc"] == acc[kind] and m[kind]["test_acc_ci_low"] <= acc[kind] <= m[kind]["test_acc_ci_high"]
    assert m["geometry"]["test_acc"] == m["test_acc"] and m["best_kind"] == sk.best_kind
    assert 0 <= m["group_f1"] <= 1 and 0 <= m["group_ap"] <= 1 and m["group_method"] == g["best"]
    for c in SIZE_CLASSES:
        assert f"group_ap_size_{c}" in m
    assert m["both_minus_geometry"] == sk.comparisons["both - geometry"]["test"]["diff"]
    assert 0 < m["both_minus_geometry_p"] <= 1 and 0 < m["appearance"]["minus_lgbm_p"] <= 1   # never p = 0
    # what the notebook shows
    assert make_kinds_table({run.name: run}).shape[0] == 3 and make_groups_table({run.name: run}).shape[0] == 2
    text = describe_kinds({run.name: run})
    # the verdict words of the test, never "does not help" for a test that could not tell them apart
    words = sk.comparisons["both - geometry"]["test"]["verdict_word"]
    assert {"better": "Adding appearance to geometry helps", "worse": "Adding appearance to geometry hurts",
            "not distinguishable": "geometry is not distinguishable"}[words] in text and "not help" not in text
    # matched budgets (same maximum epochs and early-stopping rule), or said plainly that they were not
    budgets = {(kr.budget["max_epochs"], kr.budget["patience"]) for kr in sk.kinds.values()}
    assert ("matched budgets" in text) == (len(budgets) == 1) and ("unequal budgets" in text) == (len(budgets) > 1)
    assert "not comparable" in text and "union crop" in text
    assert f"{m['group_f1']:.3f}" in describe_groups({run.name: run}) and "56.4" in describe_groups({run.name: run})
    answer, _ = describe_answer({run.name: run})
    assert f"F1 {m['group_f1']:.3f}" in answer and {"better": "appearance helps", "worse": "appearance hurts"}.get(words, words) in answer
    card = make_kinds_card(run)
    assert card["trained"] == list(sk.kinds) and card["groups"]["method"] == g["best"]
    assert "scene input kinds" in (out / "evaluation_report.txt").read_text()


def test_scene_data_without_images_runs_geometry_only_and_still_groups(scene_images, tmp_path):
    folder, _ = scene_images
    plain = _copy_with_meta(folder, tmp_path / "no_images", n_images=0)
    run = run_stage1(str(plain), tmp_path, tmp_path / "out", SCENE_PARAMS)
    assert list(run.scene.kinds) == ["geometry"] and run.scene.n_images == 0
    assert "n_images = 0" in describe_kinds({run.name: run}) and "Requested but not run: appearance, both" in \
        describe_kinds({run.name: run})
    assert run.scene.groups is not None and run.scene.groups["kind"] == "geometry"
    assert (tmp_path / "out" / "no_images" / "groups" / "det_group.txt").is_file()
    assert not (tmp_path / "out" / "no_images" / "appearance").exists()
    text, _ = describe_answer({run.name: run})
    assert "only the geometry input ran" in text


def test_scene_inputs_are_checked(scene_images, tmp_path):
    folder, _ = scene_images
    with pytest.raises(WorkbookError, match="scene_inputs"):
        run_stage1(str(folder), tmp_path, tmp_path / "out", dict(SCENE_PARAMS, scene_inputs=["pixels"]))


def test_crop_kinds_take_the_geometry_budget_unless_told_otherwise():
    # crop_epochs 0 (the default) trains the crop kinds under geometry's maximum epochs and early stopping
    params = dict(SCENE_PARAMS, epochs=8, patience=3)
    assert (make_crop_train_config(dict(params, crop_epochs=0)).epochs, make_crop_train_config(params).patience) == (8, 3)
    assert make_crop_train_config(dict(params, crop_epochs=4)).epochs == 4
