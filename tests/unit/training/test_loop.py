"""The training loop: resume, checkpoints, schedules, tasks of any kind, inputs of any shape."""
import json
import math

import numpy as np
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.models.registry import create_model
from helpers.training.callbacks import BestTracker, Checkpointer, EarlyStopping, HistoryWriter
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.tasks import BinaryTask, MulticlassTask


def _image_pairs(n=96, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    xa = torch.rand(n, 1, size, size, generator=g)
    same = torch.rand(n, generator=g) > 0.5
    xb = torch.where(same[:, None, None, None], xa + 0.1 * torch.rand(n, 1, size, size, generator=g),
                     torch.rand(n, 1, size, size, generator=g))
    return xa, xb, same.long()

def _small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("siamese_resnet", in_channels=1, layers=(1, 1), width_mult=0.125, feat_dim=16, **kw)

def _cfg(**kw):
    base = dict(epochs=4, batch_size=16, lr=3e-3, patience=0, log_every=0, seed=3, warmup_epochs=1)
    base.update(kw)
    return TrainConfig(**base)

torch.set_num_threads(1)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    xa, xb, y = _image_pairs()
    train, val = (xa[:64], xb[:64], y[:64]), (xa[64:], xb[64:], y[64:])
    cfg = _cfg(epochs=4)
    full = train_model(_small_model(), BinaryTask(), train, val, cfg, out_dir=tmp_path / "a")

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(_small_model(), BinaryTask(), train, val, cfg, out_dir=tmp_path / "b", on_epoch_end=interrupt)
    assert json.loads((tmp_path / "b" / "history.json").read_text())[-1]["epoch"] == 1
    resumed = train_model(_small_model(seed=99), BinaryTask(), train, val, cfg, out_dir=tmp_path / "b")
    assert resumed.resumed_from == 1
    drop = ("epoch_time_s", "samples_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    pa = predict(full.model, BinaryTask(), val[:2])
    pb = predict(resumed.model, BinaryTask(), val[:2])
    np.testing.assert_array_equal(pa, pb)


def test_changed_config_starts_afresh(tmp_path):
    xa, xb, y = _image_pairs(48)
    data = (xa, xb, y)
    train_model(_small_model(), BinaryTask(), data, data, _cfg(epochs=1), out_dir=tmp_path)
    res = train_model(_small_model(), BinaryTask(), data, data, _cfg(epochs=2, lr=1e-3), out_dir=tmp_path)
    assert res.resumed_from == 0 and res.epochs_run == 2


def test_cosine_warmup_schedule_and_plateau():
    xa, xb, y = _image_pairs(64)
    lrs = []
    cfg = _cfg(epochs=4, batch_size=16, lr=1e-2, warmup_epochs=1, warmup_lr=1e-4, eta_min=1e-5)
    train_model(_small_model(), BinaryTask(), (xa, xb, y), (xa, xb, y), cfg,
                on_epoch_end=lambda r: lrs.append(r["lr"]))
    assert lrs[0] == pytest.approx(1e-2, rel=1e-6)          # warm-up reached the base lr after epoch 1
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-6)         # cosine ended at eta_min
    assert lrs[1] > lrs[2] > lrs[3]
    res = train_model(_small_model(), BinaryTask(), (xa, xb, y), (xa, xb, y), _cfg(epochs=2, scheduler="plateau"))
    assert res.epochs_run == 2


def test_early_stopping_and_callback_stop():
    xa, xb, y = _image_pairs(64)
    # lr 0 would be rejected; a tiny lr with min_delta 1 never "improves" after epoch 1
    res = train_model(_small_model(), BinaryTask(), (xa, xb, y), (xa, xb, y),
                      _cfg(epochs=10, patience=2, min_delta=1.0))
    assert res.epochs_run == 3 and res.stopped_early
    res = train_model(_small_model(), BinaryTask(), (xa, xb, y), (xa, xb, y), _cfg(epochs=10),
                      on_epoch_end=lambda r: r["epoch"] >= 2)
    assert res.epochs_run == 2


def test_grad_accum_amp_bf16_augment_label_smoothing():
    xa, xb, y = _image_pairs(50)
    cfg = _cfg(epochs=2, grad_accum_steps=2, amp=True, augment=True, label_smoothing=0.1, max_grad_norm=0.5)
    res = train_model(_small_model(), BinaryTask(loss_name="focal", alpha=-1, gamma=2.0), (xa, xb, y),
                      (xa, xb, y), cfg)
    assert all(math.isfinite(r["train_loss"]) and r["grad_norm"] > 0 for r in res.history)


def test_vector_pairs_with_pair_features_multiclass():
    g = torch.Generator().manual_seed(1)
    n = 80
    xa, xb, pair = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g), torch.randn(n, 3, generator=g)
    y = (pair[:, 0] > 0).long() + (pair[:, 1] > 0).long()  # 3 classes
    torch.manual_seed(0)
    model = create_model("siamese_mlp", in_features=6, hidden=(16,), feat_dim=8, num_classes=3, pair_dim=3)
    res = train_model(model, MulticlassTask(3, class_weights=[1, 1, 2]), (xa, xb, pair, y), (xa, xb, pair, y),
                      _cfg(epochs=3, batch_size=17))    # 80 = 4*17 + 12: uneven batches
    assert 0 <= res.history[-1]["f1"] <= 1
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]  # the pair features carry the label
    probs = predict(model, MulticlassTask(3), (xa, xb, pair))
    assert probs.shape == (n, 3)


def test_single_input_model_and_regression_task():
    class MSETask:  # a task defined elsewhere: lower-is-better primary metric
        primary = "mse"

        def loss(self, out, y):
            return ((out - y.float()) ** 2).mean()

        def predict(self, out):
            return out

        def metrics(self, out, y):
            return {"primary": "mse", "mse": float(((out - y.float()) ** 2).mean())}

    x = torch.rand(40, 1, 8, 8)
    y = x.mean(dim=(1, 2, 3))
    torch.manual_seed(0)
    model = create_model("resnet", in_channels=1, layers=(1,), width_mult=0.125, feat_dim=8)
    res = train_model(model, MSETask(), (x, y), (x, y), _cfg(epochs=2, monitor="mse"))
    assert "mse" in res.best and res.best["mse"]["value"] == min(r["mse"] for r in res.history)


def test_numeric_primary_metric_is_tracked():
    class Task(BinaryTask):
        def metrics(self, out, y):
            return {"primary": float(self.predict(out).mean())}

    xa, xb, y = _image_pairs(32)
    res = train_model(_small_model(), Task(), (xa, xb, y), (xa, xb, y), _cfg(epochs=1))
    assert "primary" in res.history[0] and "primary" in res.best


def test_train_samples_per_s_is_the_median():
    assert train_samples_per_s([{"samples_per_s": 10.0}, {"samples_per_s": 30.0}, {"samples_per_s": 20.0}]) == 20.0
    assert math.isnan(train_samples_per_s([]))


def _row(epoch, val_loss, **metrics):
    return {"epoch": epoch, "train_loss": 0.0, "val_loss": val_loss, **metrics}


def test_best_tracker_directions_and_public_form():
    tracker = BestTracker()
    assert tracker.update(_row(1, 0.5, accuracy=0.6, mse=2.0), {"accuracy": 0.6, "mse": 2.0}, "mse", False) \
        == ["loss", "accuracy", "mse"]
    assert tracker.update(_row(2, 0.4, accuracy=0.5, mse=1.0), {"accuracy": 0.5, "mse": 1.0}, "mse", False) \
        == ["loss", "mse"]
    assert tracker.update(_row(3, math.nan, accuracy=0.7, mse=3.0), {"accuracy": 0.7, "mse": 3.0}, "mse", False) \
        == ["accuracy"]
    tracker.set_monitor(0.4, 2, "val_loss")
    assert tracker.best["_monitor"] == {"value": 0.4, "epoch": 2, "name": "val_loss"}
    assert tracker.public() == {"loss": {"value": 0.4, "epoch": 2}, "accuracy": {"value": 0.7, "epoch": 3},
                                "mse": {"value": 1.0, "epoch": 2},
                                "monitor": {"value": 0.4, "epoch": 2, "name": "val_loss"}}
    again = BestTracker()
    again.load_state_dict(tracker.state_dict())
    assert again.public() == tracker.public()


def test_early_stopping_patience_snapshot_and_resume_state():
    model = torch.nn.Linear(2, 1)
    cfg = _cfg(patience=2, min_delta=0.1, monitor="accuracy")
    tracker = BestTracker()
    stop = EarlyStopping(cfg, BinaryTask(), tracker, model)
    assert stop.column == "accuracy" and stop.greater_is_better
    assert stop.update(_row(1, 1.0, accuracy=0.5)) is None and stop.wait == 0
    snapshot = {k: v.clone() for k, v in stop.best_state.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert stop.update(_row(2, 1.0, accuracy=0.55)) is None and stop.wait == 1   # +0.05 < min_delta
    # A fresh instance loaded from the exported state continues the count exactly.
    resumed_tracker = BestTracker()
    resumed_tracker.load_state_dict(tracker.state_dict())
    resumed = EarlyStopping(cfg, BinaryTask(), resumed_tracker, model)
    resumed.load_state_dict(stop.state_dict())
    reason = resumed.update(_row(3, 1.0, accuracy=0.52))
    assert reason == "early stop at epoch 3: accuracy no better than 0.5000 (epoch 1) for 2 epochs"
    resumed.restore_best()
    torch.testing.assert_close(model.state_dict(), snapshot)
    assert "not finite" in stop.update(_row(3, 1.0, accuracy=math.nan))
    with pytest.raises(WorkbookError, match="monitor='val_f1': not among"):
        EarlyStopping(_cfg(monitor="val_f1"), BinaryTask(), BestTracker(), model).update(_row(1, 1.0))


def test_writers_stay_silent_off_rank0(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    history = HistoryWriter(tmp_path, enabled=False)
    ckpt = Checkpointer(tmp_path, False, model, opt, None, None, _cfg())
    history.append(_row(1, 1.0))
    history.write()
    ckpt.save_epoch(1, ["loss"], {"loss": {"value": 1.0, "epoch": 1}}, history.state_dict())
    ckpt.save_final(1, {}, history.rows)
    assert list(tmp_path.iterdir()) == [] and ckpt.paths == {}
    on = Checkpointer(tmp_path, True, model, opt, None, None, _cfg())
    on.save_epoch(1, ["loss"], {"loss": {"value": 1.0, "epoch": 1}}, history.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_loss.pt", "last.pt"]
    assert on.state_dict() == {"checkpoints": {"best_loss": str(tmp_path / "best_loss.pt")}}


def test_epoch_lines_go_to_the_run_folder_not_into_the_cell(tmp_path, capsys):
    """With an output folder the per-epoch lines land in out/train.log (a later run there appends) and
    nothing is printed, so no notebook cell shows another section's training; without one they print."""
    xa, xb, y = _image_pairs(48)
    data = (xa, xb, y)
    train_model(_small_model(), BinaryTask(), data, data, _cfg(epochs=2, log_every=1), out_dir=tmp_path)
    assert capsys.readouterr().out == ""
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"] and all("val_loss=" in ln for ln in lines)
    train_model(_small_model(), BinaryTask(), data, data, _cfg(epochs=3, log_every=1), out_dir=tmp_path)
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert "starting afresh" in lines[2] and [ln.split()[1] for ln in lines[3:]] == ["1/3", "2/3", "3/3"]
    train_model(_small_model(), BinaryTask(), data, data, _cfg(epochs=1, log_every=1))
    assert "epoch   1/1" in capsys.readouterr().out
