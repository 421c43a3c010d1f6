"""Every report's answer in the smoke run: at most four sentences and 90 words, shown as Markdown (never a
printed monospace block) in the cell tagged ``answer``, which the executed notebook opens with."""
from __future__ import annotations

import json

import nbformat
import pytest

from helpers.stages.words import MAX_SENTENCES, MAX_WORDS, sentences

STEMS = ["00_data_audit", "01_pair_sampling", "02_stage1", "03_stage2", "04_multi_seed", "05_stacking",
         "06_backbones", "07_plateau_diagnosis"]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stem", STEMS)
def test_answer_is_short_and_rendered_as_markdown(smoke_run, stem):
    text = json.loads((smoke_run / stem / "answer.json").read_text())["answer"]
    assert len(sentences(text)) <= MAX_SENTENCES and len(text.split()) <= MAX_WORDS, text
    assert "None" not in text and " nan" not in text, text                          # a missing value is said in words
    assert not {"digit_pairs", "scene_pairs", "val_cos", "schedule_ended", "stage1", "stage2"} & set(
        w.strip(".,;:()") for w in text.split()), text                                # names as a reader knows them
    nb = nbformat.read(smoke_run / stem / f"{stem}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "answer" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1 and nb.cells.index(cells[0]) <= 1             # the first screen: right after the title
    outputs = cells[0].get("outputs", [])
    assert not [o for o in outputs if o.get("output_type") == "stream"]  # nothing printed
    shown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert shown and text in shown[0]
