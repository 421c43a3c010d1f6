"""The curve doctor (helpers.diagnose) and notebook 07's data, model and task (helpers.plateau)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.multiview import evaluate_ceiling, load_multiview_data, make_multiview_data



# -------------------------------------------------------------------------- data with a ceiling
def test_generated_data_ceiling_and_splits():
    d = make_multiview_data(n_identities=60, seqs_per_identity=2, frames=6, feat_dim=16, n_keypoints=5, seed=1)
    assert d.train.frames.shape[1:] == (6, 16) and d.train.keypoints.shape[1:] == (6, 5, 2)
    assert d.train.target.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(d.val.target, axis=1), 1, atol=1e-5)
    assert not (set(d.train.ids) & set(d.val.ids)) and not (set(d.val.ids) & set(d.test.ids))
    # Monte Carlo ceiling agrees with the high-dimensional approximation 1/sqrt(1 + σ²/T)
    assert abs(d.ceiling_cos - d.info["analytic_ceiling_approx"]) < 0.05
    tab = evaluate_ceiling(d)
    assert tab["val_cos"].iloc[0] > tab["val_cos"].iloc[2]      # de-rotation beats ignoring the pose


def test_ceiling_falls_with_noise_and_is_one_without():
    clean = make_multiview_data(n_identities=30, obs_noise=0.0, feat_dim=8, seed=0)
    noisy = make_multiview_data(n_identities=30, obs_noise=3.0, feat_dim=8, seed=0)
    assert clean.ceiling_cos > 0.9999 and noisy.ceiling_cos < clean.ceiling_cos


def test_control_data_adds_training_identities_only():
    d = make_multiview_data(n_identities=100, seqs_per_identity=1, feat_dim=8, seed=0, control_data_factor=2)
    more = d.with_extra_training()
    assert len(more.train) == 2 * len(d.train)
    assert more.val is d.val and more.test is d.test
    assert not (set(more.train.ids) & set(d.val.ids))
    with pytest.raises(WorkbookError, match="no extra training"):
        make_multiview_data(n_identities=20, feat_dim=8).with_extra_training()


def test_user_npz_loads_and_bad_npz_is_clear(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    p = tmp_path / "mine.npz"
    np.savez(p, frames=rng.normal(size=(n, 4, 6)), keypoints=rng.normal(size=(n, 4, 3, 3)),
             target=rng.normal(size=(n, 6)), ids=np.arange(n) // 2)
    d = load_multiview_data(str(p), run_seed=0)
    assert not d.generated and d.ceiling_cos is None
    assert len(d.train) + len(d.val) + len(d.test) == n
    assert not (set(d.train.ids) & set(d.test.ids))
    np.savez(tmp_path / "bad.npz", frames=np.zeros((3, 2, 2)))
    with pytest.raises(WorkbookError, match="missing array 'keypoints'"):
        load_multiview_data(str(tmp_path / "bad.npz"))
    with pytest.raises(WorkbookError, match="no such file"):
        load_multiview_data(str(tmp_path / "nothere.npz"))
