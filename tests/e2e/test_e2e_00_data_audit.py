"""Notebook 00 in the smoke run: the report, run card and headline metrics."""
import json

import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e


def test_run_folder_has_index_and_run_json(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["status"] == "ok" and run["profile"] == "smoke"
    assert all(nb["status"] == "ok" for nb in run["notebooks"].values())
    assert run["packages"]["torch"] == "2.14.1" and "git_commit" in run["git"]
    index = (smoke_run / "index.html").read_text()
    for stem in run["notebooks"]:
        assert f"{stem}/{stem}.html" in index
        assert (smoke_run / stem / f"{stem}.html").is_file() and (smoke_run / stem / "metrics.json").is_file()
        assert (smoke_run / stem / "config.json").is_file()


def test_audit_metrics(smoke_run):
    m = read_metrics(smoke_run, "00_data_audit")
    params = json.loads((smoke_run / "run.json").read_text())["notebooks"]["00_data_audit"]["parameters"]
    assert (m["n_train"], m["n_val"], m["n_test"]) == (params["n_pairs_train"], params["n_pairs_val"], params["n_pairs_test"])
    for split in ("train", "val", "test"):
        assert abs(m[f"pos_rate_{split}"] - params["pos_rate"]) < 0.01
    assert m["leaked_sources"] == 0 and m["duplicate_pairs_across_splits"] == 0 and m["generated"] is False


def test_audit_run_card(smoke_run):
    card = json.loads((smoke_run / "00_data_audit" / "config.json").read_text())
    assert card["notebook"] == "00_data_audit" and card["profile"] == "smoke"
    assert card["dataset"]["split_method"] == "by_source_image" and card["dataset"]["data_leakage_prevention"] is True
    for key in ("device", "world_size", "use_ddp", "pytorch_version", "cpu_count"):
        assert key in card["environment"]
    assert (smoke_run / "00_data_audit" / "digit_pairs" / "test_public.npz").is_file()
