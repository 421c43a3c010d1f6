"""The training loop: resume, checkpoints, schedules, tasks of any kind, inputs of any shape."""
import pytest
import torch

from helpers.core.errors import WorkbookError
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


def test_bad_checkpoint_and_bad_input(tmp_path):
    with pytest.raises(WorkbookError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WorkbookError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    xa, xb, y = _image_pairs(32)
    train_model(_small_model(), BinaryTask(), (xa, xb, y), (xa, xb, y), _cfg(epochs=1), out_dir=tmp_path / "r")
    other = create_model("siamese_mlp", in_features=4)
    with pytest.raises(WorkbookError, match="does not fit"):
        load_checkpoint(tmp_path / "r" / "final.pt", other)
    with pytest.raises(WorkbookError):
        train_model(_small_model(), BinaryTask(), (xa, xb, y[:5]), (xa, xb, y), _cfg())
    with pytest.raises(WorkbookError):
        TrainConfig(scheduler="step")
