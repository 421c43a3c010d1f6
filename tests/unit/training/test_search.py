"""helpers.training.search: the study runner. Two worker processes share one SQLite study and both contribute
trials; every trial writes history.json and TensorBoard files; the pruner stops training through the loop's
on_epoch_end; a stored study is continued (and a different recipe refused); the search space and widths."""
import json

import numpy as np
import pytest
import torch

from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_savez, atomic_write_json
from helpers.data.pairs import load_pair_folder
from helpers.data.predictions import write_predictions
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.search import (_train_trial, check_space, load_recipe, main, make_data_fingerprint,
                                     make_storage_url, make_trial_spec, objective, run_study, scale_width)


def _tiny_pairs(folder, seed=0, n_src=40):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for fname, n in (("train.npz", 64), ("val.npz", 32), ("test_public.npz", 32)):
        ids = rng.integers(offset, offset + n_src, (2, n))
        y = np.tile([0, 1], n // 2)
        xa = rng.random((n, 1, 8, 8), dtype=np.float32)
        xb = np.where(y[:, None, None, None] == 1, xa, rng.random((n, 1, 8, 8), dtype=np.float32)).astype(np.float32)
        atomic_savez(folder / fname, xa=xa, xb=xb, y=y, ida=ids[0], idb=ids[1])
        offset += n_src
    return folder


RECIPE = {"stem": "02_stage1", "model": "siamese_resnet",
          "kwargs": {"layers": [1, 1, 1], "width_mult": 0.125, "feat_dim": 8, "fusion": "concat"},
          "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "weight_decay": 5e-4, "patience": 0,
                    "monitor": "accuracy", "warmup_epochs": 0},
          "loss": "bce", "threshold": 0.5, "focal_alpha": -1.0, "focal_gamma": 2.0, "start": ""}


def _spec(tmp_path, data, **kw):
    splits = load_pair_folder(data)
    return make_trial_spec(RECIPE, str(data), "pairs", tmp_path, tmp_path / "trials", seed=3,
                           data_fingerprint=make_data_fingerprint(splits), **kw)


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    data = _tiny_pairs(tmp_path / "pairs")
    spec = _spec(tmp_path, data, pruner="median", n_startup_trials=2)
    res = run_study(spec, tmp_path / "search" / "study.db", "pairs_stage1", n_trials=6, workers=2, threads=1,
                    verbose=False)
    assert (tmp_path / "search" / "study.db").is_file() and res.storage.startswith("sqlite:///")
    t = res.trials
    assert len(t) == 6 and res.n_trials == 6 and set(t["state"]) <= {"COMPLETE", "PRUNED"}
    # The enqueued hand-set trial runs first in a process of its own (two processes popping one waiting trial
    # from SQLite at once would both run it); then both parallel worker processes ran trials of the one study.
    assert t["worker"].nunique() == 3 and (t["worker"] == t.set_index("number").loc[0, "worker"]).sum() == 1
    assert t[t["number"] > 0]["worker"].nunique() == 2 and res.workers == 2
    assert {o["worker"] for o in res.worker_outcomes} == set(t["worker"])
    assert sorted(sum((o["trials"] for o in res.worker_outcomes), [])) == list(range(6))
    for r in t.itertuples():                               # each trial leaves its history and TensorBoard files
        folder = tmp_path / "trials" / f"trial_{r.number:04d}"
        assert r.folder == str(folder) and (folder / "history.json").is_file()
        assert list(folder.glob("events.out.tfevents.*")) and not list(folder.glob("*.pt"))
        hist = json.loads((folder / "history.json").read_text())
        assert len(hist) == r.epochs_run and 1e-4 <= r.lr <= 1e-2 and 1e-5 <= r.weight_decay <= 1e-3
        assert r.width in (0.5, 1.0, 2.0) and r.width_value == 0.125 * r.width
    # the first trial is the recipe as it is (enqueued), so the best is never worse than it on validation
    first = t.set_index("number").loc[0]
    assert first["handset"] and (first["lr"], first["weight_decay"], first["width"]) == (3e-3, 5e-4, 1.0)
    assert t["handset"].sum() == 1 and spec["handset"] == {"lr": 3e-3, "weight_decay": 5e-4, "width": 1.0}
    done = t[t["state"] == "COMPLETE"]
    assert res.best_value >= first["value"]
    assert res.best_value == pytest.approx(done["value"].max()) and res.best_params["lr"] == pytest.approx(
        done.loc[done["value"].idxmax(), "lr"])
    assert res.best_kwargs["width_mult"] == pytest.approx(0.125 * res.best_params["width"])
    # each curve is what the trial reported to the pruner: its per-epoch validation accuracy
    first = json.loads((tmp_path / "trials" / "trial_0000" / "history.json").read_text())
    curve = res.curves[res.curves["number"] == 0]
    assert curve["value"].tolist() == pytest.approx([row["accuracy"] for row in first])


class _PruneAfterFirstEpoch:
    """A stand-in trial whose pruner says stop as soon as one value is reported."""
    number = 7

    def __init__(self):
        self.reported, self.attrs = [], {}

    def suggest_float(self, name, lo, hi, log=False):
        return {"lr": 2e-3, "weight_decay": 1e-4}[name]

    def suggest_categorical(self, name, choices):
        return choices[0]

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return bool(self.reported)

    def set_user_attr(self, k, v):
        self.attrs[k] = v


def test_the_pruner_stops_training_through_on_epoch_end(tmp_path):
    import optuna

    data = _tiny_pairs(tmp_path / "pairs")
    spec = _spec(tmp_path, data)
    spec["train"]["epochs"] = 4
    trial = _PruneAfterFirstEpoch()
    r = _train_trial(trial, spec, {"lr": 2e-3, "weight_decay": 1e-4, "width": 1.0}, tmp_path / "t")
    assert r["pruned_at"] == 1 and r["epochs_run"] == 1 and [s for s, _ in trial.reported] == [1]
    assert len(json.loads((tmp_path / "t" / "history.json").read_text())) == 1
    with pytest.raises(optuna.TrialPruned):
        objective(_PruneAfterFirstEpoch(), spec)
    assert (tmp_path / "trials" / "trial_0007" / "history.json").is_file()


def test_a_stored_study_is_continued_from_its_file_and_refuses_another_recipe(tmp_path):
    data = _tiny_pairs(tmp_path / "pairs")
    spec = _spec(tmp_path, data, pruner="none")
    first = run_study(spec, tmp_path / "a" / "study.db", "s", n_trials=2, workers=1, threads=1, verbose=False)
    assert first.n_before == 0 and first.n_trials == 2
    # a later run copies the file into its own folder and runs only the missing trials; the old file is untouched
    later = run_study(spec, tmp_path / "b" / "study.db", "s", n_trials=3, workers=1, threads=1,
                      resume_from=tmp_path / "a" / "study.db", verbose=False)
    assert later.n_before == 2 and later.n_trials == 3 and sorted(later.trials["number"]) == [0, 1, 2]
    assert later.resumed_from.endswith("study.db")
    assert len(run_study(spec, tmp_path / "a" / "study.db", "s", n_trials=2, workers=1, threads=1,
                         resume_from=tmp_path / "a" / "study.db", verbose=False).trials) == 2
    # another machine joins through the storage: the spec comes from the study itself
    assert main(["--storage", str(tmp_path / "b" / "study.db"), "--study", "s", "--n-trials", "1",
                 "--workers", "1", "--threads", "1", "--out", str(tmp_path / "remote")]) == 0
    assert len(list((tmp_path / "remote").glob("trial_0003/history.json"))) == 1
    other = {**spec, "space": {**spec["space"], "lr": [1e-5, 1e-3]}}
    with pytest.raises(WorkbookError, match="different space"):
        run_study(other, tmp_path / "c" / "study.db", "s", n_trials=4, resume_from=tmp_path / "b" / "study.db",
                  verbose=False)
    with pytest.raises(WorkbookError, match="no such study file"):
        run_study(spec, tmp_path / "d" / "study.db", "s", n_trials=1, resume_from=tmp_path / "nope.db")


def test_space_widths_and_storage_urls():
    assert check_space({}) == {"lr": [1e-4, 1e-2], "weight_decay": [1e-5, 1e-3], "width": [0.5, 1.0, 2.0]}
    with pytest.raises(WorkbookError, match="0 < low < high"):
        check_space({"lr": [1e-2, 1e-4]})
    with pytest.raises(WorkbookError, match="distinct positive"):
        check_space({"width": [1.0, 1.0]})
    assert scale_width({"width_mult": 0.25, "feat_dim": 8}, 2.0) == {"width_mult": 0.5, "feat_dim": 8}
    assert scale_width({"hidden": [32, 16]}, 0.5)["hidden"] == [16, 8]
    with pytest.raises(WorkbookError, match="no width_mult or hidden"):
        scale_width({"feat_dim": 8}, 2.0)
    assert make_trial_spec({**RECIPE, "train": {**RECIPE["train"], "lr": 0.5}}, "d", "l", ".", ".")["handset"] is None
    assert make_storage_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert make_storage_url("x/study.db").startswith("sqlite:////") and make_storage_url("x/study.db").endswith("x/study.db")
    with pytest.raises(WorkbookError, match="pruner"):
        make_trial_spec(RECIPE, "d", "l", ".", ".", pruner="random")


def test_recipes_are_read_from_a_notebooks_scored_checkpoint(tmp_path):
    folder = tmp_path / "run" / "02_stage1" / "pairs"
    folder.mkdir(parents=True)
    model = create_model("siamese_resnet", in_channels=1, layers=[1, 1, 1], width_mult=0.125, feat_dim=8)
    torch.save({"model_state_dict": model.state_dict(), "model_spec": model.spec,
                "config": TrainConfig(epochs=2, lr=3e-3).to_dict()}, folder / "best_accuracy.pt")
    atomic_write_json(folder / "config.json", {"training": {"monitor": "accuracy", "loss_function": "BCEWithLogits"}})
    with pytest.raises(DataError, match=r"stage1\.npz"):           # the threshold 02 declared must be recorded
        load_recipe(tmp_path / "run", "02_stage1", "pairs")
    write_predictions(folder / "predictions" / "stage1.npz", [0.2, 0.8], [0.4], [0, 1], [1], threshold=0.35)
    r = load_recipe(tmp_path / "run", "02_stage1", "pairs")
    assert r["model"] == "siamese_resnet" and r["kwargs"]["width_mult"] == 0.125 and r["train"]["lr"] == 3e-3
    assert r["loss"] == "bce" and r["start"] == "" and r["threshold"] == 0.35
    with pytest.raises(WorkbookError, match="run it first"):
        load_recipe(tmp_path / "run", "02_stage1", "other")
