"""Seed replicas trained together (`helpers.training.replicas`) against the same seeds trained alone."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.data.digits import load_digit_images, make_pairs
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.recipes import make_train_config
from helpers.training.replicas import (choose_mode, MIN_GAIN, read_mode_record, record_modes, replica_kind,
                                       train_replicas, train_replicas_vmap, vmap_unsupported)
from helpers.training.tasks import BinaryTask

torch.set_num_threads(1)

SEEDS = (42, 123, 456)
# Notebook 02's recipe parameters, tiny.
RECIPE = dict(seed=0, epochs=3, batch_size=32, lr=2e-3, weight_decay=5e-4, warmup_epochs=1, patience=0,
              monitor="accuracy", augment=True, label_smoothing=0.0, max_grad_norm=1.0, num_threads=1, log_every=0)


def _digit_splits(n=(384, 96, 400), seed=0, digits=(0, 1, 7)):
    """Digit pairs as notebook 00 makes them (real UCI digits, split by source image), tiny: three digits, so
    that a tiny model learns in a few epochs (a model at chance flips test pairs on float rounding)."""
    images, labels = load_digit_images()
    rng = np.random.default_rng(seed)
    split_of = np.where(np.isin(labels, digits), rng.integers(0, 3, len(labels)), -1)
    out = []
    for s, k in enumerate(n):
        ida, idb, y = make_pairs(np.flatnonzero(split_of == s), labels, k, 0.5, rng)
        out.append((images[ida][:, None], images[idb][:, None], y))
    return out


def _digit_model(seed):
    torch.manual_seed(seed)   # as notebook 02 and 04 seed a model before building it
    return create_model("stage1_fusion_cbam", in_channels=1, layers=[1, 1], width_mult=0.125, feat_dim=16)


def _scene_splits(n=(320, 96, 160), seed=0):
    """Scene-like vector pairs: per-person cues and pair geometry features (the geometry model's inputs)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in n:
        y = (rng.random(k) < 0.4).astype(np.int64)
        xa = rng.standard_normal((k, 9)).astype(np.float32)
        xb = (0.7 * xa * y[:, None] + rng.standard_normal((k, 9))).astype(np.float32)
        pair = (rng.standard_normal((k, 6)) + y[:, None]).astype(np.float32)
        out.append((xa, xb, pair, y))
    return out


def _scene_model(seed):
    torch.manual_seed(seed)
    return create_model("siamese_mlp", in_features=9, hidden=[32, 32], feat_dim=16, fusion="adaptive", pair_dim=6)


def _configs(kind, **kw):
    base = make_train_config(RECIPE, kind)
    return [dataclasses.replace(base, seed=s, **kw) for s in SEEDS]


def _test_acc(model, test):
    p = predict(model, BinaryTask(), test[:-1])
    return float(((p >= 0.5) == test[-1]).mean())


def _check_bn_followed_own_batches(alone, together, start):
    """BatchNorm running statistics moved from their start by ~0.1-0.5 and agree with alone's to float drift
    (another replica's batches would put them ~0.1 apart)."""
    sa, sr = alone.model.state_dict(), together.model.state_dict()
    bn = [k for k in sa if "running_mean" in k]
    assert bn and max(float((sa[k] - start[k]).abs().max()) for k in bn) > 0.05
    assert max(float((sa[k] - sr[k]).abs().max()) for k in bn) < 1e-2


def test_scene_geometry_replicas_match_their_seeds_trained_alone():
    tr, va, te = _scene_splits()
    cfgs = _configs("vector")
    alone = [train_model(_scene_model(s), BinaryTask(), tr, va, c) for s, c in zip(SEEDS, cfgs)]
    together = train_replicas_vmap([_scene_model(s) for s in SEEDS], BinaryTask(), tr, va, cfgs)
    assert len({round(a.history[0]["train_loss"], 6) for a in alone}) == len(SEEDS)   # the seeds really differ
    for a, r in zip(alone, together):
        assert r.epochs_run == a.epochs_run == 3
        assert r.history[0]["train_loss"] == pytest.approx(a.history[0]["train_loss"], rel=1e-4)
        assert r.history[0]["val_loss"] == pytest.approx(a.history[0]["val_loss"], rel=1e-4)
        assert abs(_test_acc(r.model, te) - _test_acc(a.model, te)) <= 0.005
        assert _test_acc(a.model, te) > 0.6                    # learned: predictions are not coin flips
        assert [row["lr"] for row in r.history] == pytest.approx([row["lr"] for row in a.history], rel=1e-9)
        _check_bn_followed_own_batches(a, r, _scene_model(SEEDS[0]).state_dict())


def test_digit_stage1_replicas_match_their_seeds_trained_alone():
    """The conv model after one epoch (augmentation, dropout, BatchNorm). Later epochs drift apart by float
    rounding amplified by training: batched convolutions sum in another order, and so does the same seed
    trained alone with another convolution kernel (oneDNN off), which drifts as far (measured: test
    probabilities within 1e-3 of alone here, within 3e-3 for oneDNN off)."""
    tr, va, te = _digit_splits()
    cfgs = _configs("image", epochs=1)
    alone = [train_model(_digit_model(s), BinaryTask(), tr, va, c) for s, c in zip(SEEDS, cfgs)]
    together = train_replicas_vmap([_digit_model(s) for s in SEEDS], BinaryTask(), tr, va, cfgs)
    assert len({round(a.history[0]["train_loss"], 6) for a in alone}) == len(SEEDS)
    for a, r in zip(alone, together):
        assert r.history[0]["train_loss"] == pytest.approx(a.history[0]["train_loss"], rel=1e-4)
        assert r.history[0]["val_loss"] == pytest.approx(a.history[0]["val_loss"], rel=1e-3)
        pa, pr = predict(a.model, BinaryTask(), te[:-1]), predict(r.model, BinaryTask(), te[:-1])
        assert np.abs(pa - pr).max() < 2e-3
        assert abs(_test_acc(r.model, te) - _test_acc(a.model, te)) <= 0.005 + 1e-12   # 2 of 400 pairs
        _check_bn_followed_own_batches(a, r, _digit_model(SEEDS[0]).state_dict())


def test_a_different_data_order_or_dropout_stream_would_be_seen():
    """The comparison above can fail: a replica given another seed's config does not match."""
    tr, va, _ = _scene_splits()
    cfgs = _configs("vector")
    alone = train_model(_scene_model(SEEDS[0]), BinaryTask(), tr, va, cfgs[0])
    swapped = [dataclasses.replace(cfgs[0], seed=SEEDS[1]), cfgs[1]]
    r = train_replicas_vmap([_scene_model(SEEDS[0]), _scene_model(SEEDS[1])], BinaryTask(), tr, va, swapped)
    assert r[0].history[0]["train_loss"] != pytest.approx(alone.history[0]["train_loss"], rel=1e-4)


def test_per_replica_early_stopping_freezes_a_stopped_replica():
    """Replicas stop at different epochs; a stopped one keeps its weights (no weight decay after it stopped)
    and ends with what it ends with alone, here its final weights (restore_best off)."""
    tr, va, _ = _scene_splits(n=(160, 64, 16), seed=3)
    seeds = (1, 2, 3, 4)
    cfgs = [TrainConfig(epochs=8, batch_size=32, lr=5e-3, weight_decay=0.5, patience=1, min_delta=0.02,
                        monitor="accuracy", restore_best=False, seed=s, log_every=0, tensorboard=False)
            for s in seeds]
    alone = [train_model(_scene_model(s), BinaryTask(), tr, va, c) for s, c in zip(seeds, cfgs)]
    together = train_replicas_vmap([_scene_model(s) for s in seeds], BinaryTask(), tr, va, cfgs)
    stops = [a.epochs_run for a in alone]
    assert len(set(stops)) > 1 and min(stops) < 8               # they do stop, at different epochs
    for a, r in zip(alone, together):
        assert (r.epochs_run, r.stopped_early) == (a.epochs_run, a.stopped_early)
        assert r.best["monitor"] == a.best["monitor"]
        for (k, va_), (_, vr) in zip(a.model.state_dict().items(), r.model.state_dict().items()):
            if va_.is_floating_point():
                assert torch.allclose(va_, vr, rtol=1e-3, atol=1e-5), k


def test_restore_best_keeps_each_replicas_best_epoch():
    tr, va, te = _scene_splits(n=(160, 64, 64), seed=5)
    cfgs = [TrainConfig(epochs=5, batch_size=32, lr=1e-2, patience=2, monitor="val_loss", seed=s, log_every=0,
                        tensorboard=False) for s in SEEDS]
    alone = [train_model(_scene_model(s), BinaryTask(), tr, va, c) for s, c in zip(SEEDS, cfgs)]
    together = train_replicas_vmap([_scene_model(s) for s in SEEDS], BinaryTask(), tr, va, cfgs)
    for a, r in zip(alone, together):
        assert r.best["monitor"]["epoch"] == a.best["monitor"]["epoch"]
        np.testing.assert_allclose(predict(r.model, BinaryTask(), te[:-1]), predict(a.model, BinaryTask(), te[:-1]),
                                   atol=1e-4)


def test_per_replica_data_matches_alone():
    (tr0, va, _), (tr1, _, _) = _scene_splits(seed=0), _scene_splits(seed=1)
    cfgs = _configs("vector")[:2]
    alone = [train_model(_scene_model(s), BinaryTask(), t, va, c) for s, t, c in zip(SEEDS, (tr0, tr1), cfgs)]
    together = train_replicas_vmap([_scene_model(s) for s in SEEDS[:2]], BinaryTask(), [tr0, tr1], [va, va], cfgs)
    for a, r in zip(alone, together):
        assert r.history[0]["train_loss"] == pytest.approx(a.history[0]["train_loss"], rel=1e-4)


def test_unsupported_recipes_are_refused_by_vmap_and_trained_one_after_another():
    tr, va, _ = _scene_splits(n=(64, 32, 16))
    cfgs = _configs("vector", epochs=1, scheduler="plateau")
    models = [_scene_model(s) for s in SEEDS]
    assert "plateau" in vmap_unsupported(models, tr, cfgs)
    with pytest.raises(WorkbookError, match="plateau"):
        train_replicas_vmap(models, BinaryTask(), tr, va, cfgs)
    run = train_replicas(models, BinaryTask(), tr, va, cfgs, mode="auto")
    assert run.mode == "sequential" and "plateau" in run.reason
    alone = train_model(_scene_model(SEEDS[0]), BinaryTask(), tr, va, cfgs[0])
    assert run.results[0].history[0]["train_loss"] == alone.history[0]["train_loss"]
    mixed = _configs("vector", epochs=1)
    mixed[1] = dataclasses.replace(mixed[1], lr=1e-4)
    assert "differ" in vmap_unsupported(models, tr, mixed)


class _Noisy(nn.Module):
    """Draws a random number in forward outside nn.Dropout: cannot replay alone's stream."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x + 0.01 * torch.randn_like(x))[:, 0]


def test_a_model_drawing_other_random_numbers_is_refused():
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    cfgs = [TrainConfig(epochs=1, batch_size=16, seed=s, log_every=0, tensorboard=False) for s in (0, 1)]
    with pytest.raises(WorkbookError, match="random numbers"):
        train_replicas_vmap([_Noisy(), _Noisy()], BinaryTask(), (x, y), (x, y), cfgs)


def test_choice_is_never_a_way_measured_slower_than_one_after_another(tmp_path):
    assert choose_mode({"sequential": 10.0, "vmap": 7.0})[0] == "vmap"
    assert choose_mode({"sequential": 10.0, "vmap": 10.0 / (MIN_GAIN - 0.01)})[0] == "sequential"
    assert choose_mode({"sequential": 10.0, "vmap": 12.0, "processes": 6.0})[0] == "processes"
    assert choose_mode({"vmap": 1.0})[0] == "sequential"
    rec = tmp_path / "modes.json"
    tr, va, _ = _scene_splits(n=(64, 32, 16))
    cfgs = _configs("vector", epochs=1)
    models = [_scene_model(s) for s in SEEDS]
    kind = replica_kind(models, cfgs, 64)
    record_modes(kind, {"sequential": 1.0, "vmap": 2.0}, rec, source="test")
    assert train_replicas(models, BinaryTask(), tr, va, cfgs, record=rec).mode == "sequential"
    record_modes(kind, {"sequential": 2.0, "vmap": 1.0}, rec, source="test")
    run = train_replicas([_scene_model(s) for s in SEEDS], BinaryTask(), tr, va, cfgs, record=rec)
    assert run.mode == "vmap" and run.timings["vmap"] == 1.0
    # No record for another kind: a probe measures and records it.
    other = _configs("vector", epochs=1, batch_size=16)
    run = train_replicas([_scene_model(s) for s in SEEDS], BinaryTask(), tr, va, other, record=rec)
    assert set(read_mode_record(rec)[replica_kind(models, other, 64)]) >= {"sequential", "vmap"}
    assert run.mode in ("sequential", "vmap") and run.timings["sequential"] > 0
    with pytest.raises(WorkbookError, match="mode='fast'"):
        train_replicas(models, BinaryTask(), tr, va, cfgs, mode="fast")


def test_processes_train_each_replica_as_alone():
    tr, va, _ = _scene_splits(n=(64, 32, 16))
    cfgs = _configs("vector", epochs=2)[:2]
    run = train_replicas([_scene_model(s) for s in SEEDS[:2]], BinaryTask(), tr, va, cfgs, mode="processes")
    for s, c, r in zip(SEEDS, cfgs, run.results):
        alone = train_model(_scene_model(s), BinaryTask(), tr, va, dataclasses.replace(c, num_threads=1))
        assert r.history[0]["train_loss"] == pytest.approx(alone.history[0]["train_loss"], rel=1e-6)
        np.testing.assert_allclose(predict(r.model, BinaryTask(), va[:-1]), predict(alone.model, BinaryTask(), va[:-1]),
                                   atol=1e-6)
