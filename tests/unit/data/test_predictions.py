"""helpers.stacking: prediction files, the leakage check, out-of-fold predictions, the comparison."""
import numpy as np
import pytest

from helpers.core.errors import DataError
from helpers.data.predictions import load_base_predictions, write_predictions



# --------------------------------------------------------------------------- prediction files
def test_prediction_files_round_trip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    vy, ty = rng.integers(0, 2, 20), rng.integers(0, 2, 30)
    for stem, name in (("02_stage1", "logreg"), ("04_multi_seed", "resnet_s42")):
        write_predictions(tmp_path / stem / "digit_pairs" / "predictions" / f"{name}.npz", rng.random(20),
                             rng.random(30), vy, ty, threshold=0.5, trained_on=["train"], selected_on="val",
                             train_keys=np.arange(5, dtype=np.uint64))
    base = load_base_predictions(tmp_path, "digit_pairs")
    assert base.names == ["02_stage1/logreg", "04_multi_seed/resnet_s42"]
    assert base.val_prob.shape == (20, 2) and base.test_prob.shape == (30, 2)
    assert base.trained_on == [["train"], ["train"]] and base.selected_on == ["val", "val"]
    assert base.train_keys[0].dtype == np.uint64
    # sources restricts the notebooks; a missing one is a clear error
    assert load_base_predictions(tmp_path, "digit_pairs", sources=["02_stage1"]).n_models == 1
    with pytest.raises(DataError, match="03_stage2"):
        load_base_predictions(tmp_path, "digit_pairs", sources=["03_stage2"])
    # labels that disagree between files (another split order) are refused, naming the file
    write_predictions(tmp_path / "03_stage2" / "digit_pairs" / "predictions" / "bad.npz", rng.random(20),
                         rng.random(30), 1 - vy, ty, threshold=0.5)
    with pytest.raises(DataError, match="bad.npz"):
        load_base_predictions(tmp_path, "digit_pairs")
    with pytest.raises(DataError, match="no prediction files"):
        load_base_predictions(tmp_path, "scene_pairs")


def test_prediction_file_missing_keys_is_named(tmp_path):
    f = tmp_path / "02_stage1" / "d" / "predictions" / "m.npz"
    f.parent.mkdir(parents=True)
    np.savez(f, val_prob=np.zeros(3), val_y=np.zeros(3))
    with pytest.raises(DataError, match=r"m\.npz.*test_prob"):
        load_base_predictions(tmp_path, "d")


def test_bit_identical_models_are_stacked_once(tmp_path):
    rng = np.random.default_rng(1)
    vy, ty = rng.integers(0, 2, 20), rng.integers(0, 2, 30)
    v, t = rng.random(20), rng.random(30)
    folder = tmp_path / "04_multi_seed" / "digit_pairs" / "predictions"
    for name, (vp, tp) in {"a_s1": (v, t), "a_tuned_s1": (v, t), "b_s1": (v, t + 1e-9 * (t < 0.99))}.items():
        write_predictions(folder / f"{name}.npz", vp, tp, vy, ty, threshold=0.5)
    base = load_base_predictions(tmp_path, "digit_pairs")
    # a copy is dropped (named with the one kept); a model differing in one test row is not a copy
    assert base.names == ["04_multi_seed/a_s1", "04_multi_seed/b_s1"]
    assert base.duplicates == {"04_multi_seed/a_tuned_s1": "04_multi_seed/a_s1"}
    assert base.val_prob.shape == (20, 2) and len(base.files) == len(base.trained_on) == 2
