"""TensorBoard scalars of the training loop: the same numbers as history.json, once per epoch."""
import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers.models.registry import create_model
from helpers.training.callbacks import Checkpointer, TensorBoardWriter
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import BinaryTask

torch.set_num_threads(1)


def _data(n=48, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    xa = torch.rand(n, 1, size, size, generator=g)
    same = torch.rand(n, generator=g) > 0.5
    xb = torch.where(same[:, None, None, None], xa + 0.1 * torch.rand(n, 1, size, size, generator=g),
                     torch.rand(n, 1, size, size, generator=g))
    return (xa[:32], xb[:32], same[:32].long()), (xa[32:], xb[32:], same[32:].long())


def _train(out_dir, epochs=3, on_epoch_end=None, **kw):
    torch.manual_seed(0)
    model = create_model("siamese_resnet", in_channels=1, layers=(1, 1), width_mult=0.125, feat_dim=16)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, patience=0, log_every=0, seed=3, **kw)
    train, val = _data()
    return train_model(model, BinaryTask(), train, val, cfg, out_dir=out_dir, on_epoch_end=on_epoch_end)


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] as TensorBoard reads the folder (purged steps dropped)."""
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_matches_history(folder) -> None:
    history = json.loads((folder / "history.json").read_text())
    columns = {k for k, v in history[0].items() if k != "epoch" and isinstance(v, (int, float))}
    scalars = _scalars(folder)
    assert set(scalars) == columns
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [row["epoch"] for row in history], tag
        # Event files hold float32: equal at that precision (NaN == NaN).
        np.testing.assert_array_equal(np.float32([v for _, v in points]),
                                      np.float32([row[tag] for row in history]), err_msg=tag)


def _event_files(folder) -> list:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_scalars_match_history_json(tmp_path):
    res = _train(tmp_path / "run")
    assert res.epochs_run == 3
    _assert_matches_history(tmp_path / "run")
    assert {"train_loss", "val_loss", "accuracy", "lr", "grad_norm", "samples_per_s"} <= set(_scalars(tmp_path / "run"))
    # Nothing left to train: no second (empty) event file.
    assert _train(tmp_path / "run").resumed_from == 3 and len(_event_files(tmp_path / "run")) == 1


def test_restart_with_more_epochs_keeps_one_value_per_epoch(tmp_path):
    _train(tmp_path, epochs=3, on_epoch_end=lambda row: row["epoch"] == 2)
    res = _train(tmp_path, epochs=4)   # a changed config starts afresh over the same folder
    assert res.epochs_run == 4 and len(_event_files(tmp_path)) == 2
    _assert_matches_history(tmp_path)


def test_resume_after_a_crash_purges_the_epoch_logged_twice(tmp_path, monkeypatch):
    save_epoch = Checkpointer.save_epoch

    def crash_before_last_pt(self, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt   # epoch 2 is in the event file, last.pt still says epoch 1
        save_epoch(self, epoch, *args)

    close, closed = TensorBoardWriter.close, []

    def spy_close(self):
        closed.append(self.writer is not None)
        close(self)

    monkeypatch.setattr(Checkpointer, "save_epoch", crash_before_last_pt)
    monkeypatch.setattr(TensorBoardWriter, "close", spy_close)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path)
    assert closed == [True] and [s for s, _ in _scalars(tmp_path)["val_loss"]] == [1, 2]
    monkeypatch.setattr(Checkpointer, "save_epoch", save_epoch)
    res = _train(tmp_path)
    assert res.resumed_from == 1
    _assert_matches_history(tmp_path)


def test_the_flag_is_not_part_of_the_resume_fingerprint(tmp_path):
    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, on_epoch_end=interrupt)
    assert _train(tmp_path, tensorboard=False).resumed_from == 1


def test_no_event_file_without_out_dir_when_off_or_off_rank0(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # SummaryWriter's default folder would be ./runs
    _train(None, epochs=1)
    _train(tmp_path / "off", epochs=1, tensorboard=False)
    writer = TensorBoardWriter(tmp_path / "rank1", enabled=False)
    writer.write({"epoch": 1, "val_loss": 0.5})
    writer.close()
    assert _event_files(tmp_path) == [] and (tmp_path / "off" / "history.json").is_file()
    assert not (tmp_path / "rank1").exists()
