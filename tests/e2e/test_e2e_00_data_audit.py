"""Notebook 00 in the smoke run: the report, run card and headline metrics."""
import json

import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e


def test_run_folder_has_index_and_run_json(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["status"] == "ok" and run["profile"] == "smoke"
    # A notebook that finished either ran or reused an identical earlier result ("ok" in older runs).
    assert all(nb["status"] in ("ran", "reused", "ok") for nb in run["notebooks"].values())
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
    # The check that ran, with what it compared and the counts, not a literal flag.
    chk = card["dataset"]["leakage_check"]
    m = read_metrics(smoke_run, "00_data_audit")
    assert chk["pairs_per_split"] == {"train": m["n_train"], "val": m["n_val"], "test": m["n_test"]}
    params = json.loads((smoke_run / "run.json").read_text())["notebooks"]["00_data_audit"]["parameters"]
    assert 0 < chk["sources_per_split"]["train"] <= params["train_sources"]
    assert 0 < chk["sources_per_split"]["val"] <= params["val_sources"]
    assert sum(chk["sources_per_split"].values()) <= 1797
    assert chk["leaked_sources"] == 0 and set(chk["shared_sources_by_split_pair"].values()) == {0}
    assert "source ids" in chk["compared"] and "13 writers" in chk["not_checked"]
    for key in ("device", "world_size", "use_ddp", "pytorch_version", "cpu_count"):
        assert key in card["environment"]
    assert (smoke_run / "00_data_audit" / "digit_pairs" / "test_public.npz").is_file()


def test_audit_opens_with_its_answer(smoke_run):
    out = smoke_run / "00_data_audit"
    answer = json.loads((out / "answer.json").read_text())
    m = read_metrics(smoke_run, "00_data_audit")
    # numbers and verdicts, not phrasing: the training count, no shared source, the writers caveat
    assert f"{m['n_train']:,} pairs" in answer["answer"] and "No source image is in two splits" in answer["answer"]
    assert "writers" in answer["answer"] and answer["headline"]["source images in two splits"] == 0
    html = (out / "00_data_audit.html").read_text()
    assert html.index('id="Answer"') < html.index('id="How-many-pairs-are-there')
    # The leakage line names what was compared, with the counts, and the writers it cannot separate.
    assert "Compared the source ids of the" in html and "13 writers" in html
