"""Notebook 02's stage module on a user's own pair folders."""
import numpy as np
import torch

from helpers.stages.stage1 import make_metrics, run_stage1, run_stage1_datasets


torch.set_num_threads(1)


PARAMS = dict(seed=0, epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_epochs=0, patience=0,
              monitor="accuracy", layers=[1, 1], width_mult=0.125, feat_dim=8, mlp_hidden=[8], augment=True,
              label_smoothing=0.0, max_grad_norm=1.0, threshold=0.5, lgbm_estimators=5, num_threads=1, log_every=0)


def _pair_folder(folder, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for fname, n in (("train.npz", 64), ("val.npz", 32), ("test_public.npz", 32)):
        y = np.arange(n) % 2
        xa = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        xb = np.where(y[:, None, None] == 1, xa, rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)).astype(np.uint8)
        np.savez(folder / fname, xa=xa, xb=xb, y=y)
    return folder


def test_user_uint8_folder_without_ids_through_stage1(tmp_path):
    """A user's own NPZ folder (uint8 images [N, H, W], no ids) trains and is scored by notebook 02's code."""
    folder = _pair_folder(tmp_path / "my_pairs")
    params = PARAMS
    run = run_stage1(str(folder), tmp_path, tmp_path / "out", params)
    assert run.name == "my_pairs" and run.kind == "image" and run.epochs_run == 1
    for f in ("best_accuracy.pt", "final.pt", "history.json", "evaluation_report.txt", "config.json",
              "predictions/stage1.npz", "predictions/baseline_lgbm.npz"):
        assert (tmp_path / "out" / "my_pairs" / f).is_file(), f
    assert 0 <= run.eval_test["accuracy"] <= 1 and run.baselines["logreg"]["test"]["accuracy"] > 0.7


def test_two_folders_with_the_same_name_stay_apart(tmp_path, capsys):
    a, b = _pair_folder(tmp_path / "a" / "x"), _pair_folder(tmp_path / "b" / "x", seed=1)
    (b / "sub").mkdir()                                   # b/x/sub/.. is b/x: its name is x, not ".."
    runs = run_stage1_datasets([str(a), str(b) + "/sub/.."], tmp_path, tmp_path / "out", PARAMS)
    assert list(runs) == ["x", "x-2"]
    assert "the second is reported as x-2" in capsys.readouterr().out
    metrics = make_metrics(runs)
    assert set(metrics) == {"x", "x-2"}
    for name in ("x", "x-2"):
        assert (tmp_path / "out" / name / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x", "x-2"]
