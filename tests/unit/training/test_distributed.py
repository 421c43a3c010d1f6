"""The scale path: stage-1 training under torchrun with two CPU processes (gloo)."""
import json
import os
import subprocess
import sys

from helpers.core import paths
from helpers.data.digits import make_digit_pairs



def test_two_processes_train_one_model_and_only_rank0_writes(tmp_path):
    folder = make_digit_pairs(seed=0, train_sources=60, val_sources=60, n_pairs=(256, 128, 128),
                                     cache=tmp_path / "cache")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "helpers.distributed", "--pairs", str(folder), "--out", str(out),
                           "--set", "epochs=2", "width_mult=0.1", "feat_dim=16", "log_every=0", "patience=0"],
                          cwd=paths.PROJ_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["backend"] == "gloo" and m["epochs_run"] == 2
    assert 0.0 <= m["test_acc_ci_low"] <= m["test_acc"] <= m["test_acc_ci_high"] <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    assert proc.stdout.count("test accuracy") == 1, "only rank 0 reports"
    assert not list(out.glob("*.tmp")), "no half-written files"


def test_bad_override_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers.distributed", "--pairs", str(tmp_path), "--out",
                           str(tmp_path / "o"), "--set", "epoch=2"], cwd=paths.PROJ_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'epochs'" in proc.stderr


def _scene_pair_folder(tmp_path):
    """A fixture-sized scene pair folder with stitched panoramas, written by notebook 01's functions under a
    private cache (returned with it: the child processes must use the same one)."""
    from helpers.data.jrdb import load_scenes
    from helpers.data.pair_sampling import make_pair_sample
    from helpers.data.scene_pairs import make_dataset_meta, make_scene_pair_dataset, write_pair_dataset
    from helpers.data.scenes import select_keyframes

    cache = tmp_path / "cache"
    old = paths.CACHE
    paths.CACHE = cache
    try:
        sc = select_keyframes(load_scenes(None, n_sequences=3, frames_per_sequence=16, seed=5, render_stride=3), 3)
        sample = make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
        ds = make_scene_pair_dataset(sc, sample, 0.34, 0.33, seed=0)
        folder = write_pair_dataset(ds, tmp_path / "scene_pairs", make_dataset_meta(sc, sample, ds))
    finally:
        paths.CACHE = old
    return folder, cache


def test_two_processes_train_the_crop_model_on_scene_pairs(tmp_path):
    folder, cache = _scene_pair_folder(tmp_path)
    out = tmp_path / "ddp_both"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PAIRWISE_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "helpers.distributed", "--scene-pairs", str(folder), "--input-kind", "both",
                           "--out", str(out), "--set", "crop_epochs=2", "crop_size=[16,8]", "crop_layers=[1]",
                           "crop_width_mult=0.1", "crop_stem_stride=1", "feat_dim=8", "log_every=0", "patience=0"],
                          cwd=paths.PROJ_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["backend"] == "gloo" and m["epochs_run"] == 2 and m["input_kind"] == "both"
    assert m["model"] == "siamese_crops" and m["n_crops"] > 0 and m["crop_size"] == [16, 8]
    assert "person pairs" in m["test_acc_ci_method"]
    assert 0.0 <= m["test_acc_ci_low"] <= m["test_acc"] <= m["test_acc_ci_high"] <= 1.0
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert (out / "best_accuracy.pt").is_file() and (out / "final.pt").is_file()
    assert proc.stdout.count("test accuracy") == 1, "only rank 0 reports"
    assert list((cache / "crops").iterdir()), "the crop cache lives in the run's cache"
    assert not list(out.glob("*.tmp")), "no half-written files"


def test_crop_kinds_need_images_and_a_scene_folder(tmp_path):
    folder = make_digit_pairs(seed=0, train_sources=40, val_sources=40, n_pairs=(64, 32, 32), cache=tmp_path / "c")
    proc = subprocess.run([sys.executable, "-m", "helpers.distributed", "--scene-pairs", str(folder), "--input-kind",
                           "appearance", "--out", str(tmp_path / "o")], cwd=paths.PROJ_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "scene_source" in proc.stderr
