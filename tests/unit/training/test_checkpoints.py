"""The training loop: resume, checkpoints, schedules, tasks of any kind, inputs of any shape."""
import json

import torch

from helpers.models.registry import create_model
from helpers.training.checkpoints import load_checkpoint
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import BinaryTask


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


def test_history_rows_and_checkpoints(tmp_path):
    xa, xb, y = _image_pairs()
    res = train_model(_small_model(), BinaryTask(), (xa[:64], xb[:64], y[:64]), (xa[64:], xb[64:], y[64:]),
                      _cfg(epochs=3), out_dir=tmp_path)
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist) == 3 == res.epochs_run
    for key in ("epoch", "train_loss", "val_loss", "accuracy", "f1", "precision", "recall", "lr",
                "grad_norm", "epoch_time_s", "samples_per_s"):
        assert key in hist[0], key
    for name in ("best_accuracy.pt", "best_loss.pt", "best_f1.pt", "final.pt", "last.pt"):
        assert (tmp_path / name).is_file(), name
    ck = load_checkpoint(tmp_path / "final.pt")
    for key in ("epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                "scaler_state_dict", "best", "config", "model_spec"):
        assert key in ck
    assert ck["model_spec"]["name"] == "siamese_resnet"
    # last.pt's keys (and their order) are what a resumed run reads: keep them stable across versions.
    last = load_checkpoint(tmp_path / "last.pt")
    assert list(last) == ["epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                          "scaler_state_dict", "best", "config", "model_spec", "history", "best_state", "wait",
                          "stopped", "fingerprint", "checkpoints"]
    assert list(last["best"]) == ["loss", "accuracy", "f1", "_monitor"] and last["epoch"] == 3
    assert last["checkpoints"]["best_loss"] == str(tmp_path / "best_loss.pt")
    assert set(res.best) == {"loss", "accuracy", "f1", "monitor"}
    assert res.best["loss"]["value"] == min(r["val_loss"] for r in hist)
