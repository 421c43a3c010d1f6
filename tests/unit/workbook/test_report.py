"""The run's index page and a report's header card and training-log block, as a reader gets them."""
import re

import pytest

from helpers.workbook.report import card_html, index_html, training_logs_html


def _run():
    return {"run_id": "r1", "profile": "smoke", "started": "2026-01-01T00:00:00", "finished": None,
            "status": "running", "git": {"git_commit": None},
            "notebooks": {"00_data_audit": {"status": "ran", "duration_s": 3.0, "html": "00_data_audit/00_data_audit.html",
                                            "ipynb": "00_data_audit/00_data_audit.ipynb"},
                          "01_pair_sampling": {"status": "running"},
                          "02_stage1": {"status": "not run"}}}


def test_index_has_no_none_or_nan_and_shows_running():
    answers = {"00_data_audit": {"answer": "Balanced.", "headline": {"pairs": 2.0, "leaks": None, "gap": float("nan")}}}
    page = index_html(_run(), {"01_pair_sampling": {"acc": float("nan"), "n": None}}, answers=answers)
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert not re.search(r"\bNone\b|\bnan\b|\bNaN\b", text)
    assert "pairs: <b>2</b>" in page and "leaks: <b>n/a</b>" in page
    assert '<td class="running">running' in page


def test_index_links_are_relative_and_carry_labs_token_when_scripts_run():
    page = index_html(_run(), {})
    hrefs = re.findall(r'<a [^>]*href="([^"]+)"', page)
    assert hrefs == ["00_data_audit/00_data_audit.html", "00_data_audit/00_data_audit.ipynb", "run.json"]
    assert all(not h.startswith("/") and "://" not in h for h in hrefs)
    # In JupyterLab's viewer the <base> carries ?_xsrf=...; the script copies it onto these links.
    assert "_xsrf" in page and page.count("<a data-relative") == 3


def test_a_link_leaving_the_run_folder_is_refused():
    run = _run()
    run["notebooks"]["00_data_audit"]["html"] = "../other/x.html"
    with pytest.raises(ValueError, match="inside the run folder"):
        index_html(run, {})


def test_card_says_what_is_missing():
    card = card_html({"notebook": "06", "status": "ran", "device": None}, {"acc": float("nan"), "n": 3.0}, {"p": None})
    assert "nan" not in card.lower() and "None" not in card and ">3<" in card and "n/a" in card


def test_training_logs_collapsed_and_linked(tmp_path):
    assert training_logs_html(tmp_path) == ""
    (tmp_path / "digit_pairs").mkdir()
    (tmp_path / "digit_pairs" / "train.log").write_text("epoch   1/2 train_loss=0.7\nepoch   2/2 <b>\n")
    block = training_logs_html(tmp_path)
    assert block.startswith('<details class="wb-logs">') and "(1 run, per epoch)" in block
    assert 'href="digit_pairs/train.log"' in block and "&lt;b&gt;" in block


def test_answer_headline_says_what_is_missing(tmp_path):
    from helpers.workbook.notebook import Context

    ctx = Context(stem="06_backbones", params={}, out_dir=tmp_path, device="cpu", profile="smoke")
    md = ctx.write_answer("Two backbones ran.", {"best score": float("nan"), "seeds": 3.0, "gap": None})
    assert "best score: **n/a**" in md.data and "seeds: **3**" in md.data and "gap: **n/a**" in md.data
    assert "None" not in md.data and "nan" not in md.data
