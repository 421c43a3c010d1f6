"""The words of the reports: each notebook's template (``templates/<notebook>.md.j2``) filled from the
facts its stage computed. Every phrase for one kind of fact (an estimate with its interval, a difference
with its unit, a verdict, a count, a missing value) is written once, in ``templates/_phrases.md.j2``;
number formats are the filters below. Templates render in Jinja's sandbox (dataset names and file names
come from user data) with StrictUndefined, so a fact the template needs and the stage did not give fails
loudly instead of printing an empty string."""
from __future__ import annotations

import math
import warnings
import re
from functools import lru_cache
from typing import Any

from jinja2 import PackageLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

MAX_SENTENCES, MAX_WORDS = 4, 90      # the answer a reader takes in at a glance (README: "two to four sentences")

# Names as a reader knows them; a user's own dataset folder keeps its name.
DATASET_NAMES = {"digit_pairs": "the digit pairs", "scene_pairs": "the scene pairs"}
MODEL_NAMES = {"stage1": "stage 1", "stage2": "stage 2"}


def _finite(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and not math.isfinite(x))


def _num(x: Any, digits: int = 3) -> str:
    """0.912; a missing value reads "not measured", never None or nan."""
    return f"{float(x):.{digits}f}" if _finite(x) else "not measured"


def _pct(x: Any, digits: int = 1) -> str:
    """A fraction shown as a percentage: 0.9123 -> "91.2%"."""
    return f"{100 * float(x):.{digits}f}%" if _finite(x) else "not measured"


def _points(x: Any, digits: int = 1) -> str:
    """A difference of two fractions in percentage points, signed: 0.031 -> "+3.1"."""
    return f"{100 * float(x):+.{digits}f}" if _finite(x) else "not measured"


def _pts(x: Any, digits: int = 1) -> str:
    """A spread of a fraction in percentage points, unsigned: 0.008 -> "0.8"."""
    return f"{100 * float(x):.{digits}f}" if _finite(x) else "not measured"


def _signed(x: Any, digits: int = 3) -> str:
    return f"{float(x):+.{digits}f}" if _finite(x) else "not measured"


def _int(x: Any) -> str:
    return f"{int(x):,}" if _finite(x) else "not measured"


def _dataset(name: str) -> str:
    return DATASET_NAMES.get(str(name), str(name))


def _model(name: Any) -> str:
    return MODEL_NAMES.get(str(name), _plain(name))


def _plain(name: Any) -> str:
    """A code name said in words: "schedule_ended" -> "schedule ended"."""
    return str(name).replace("_", " ")


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=PackageLoader("helpers.stages", "templates"), undefined=StrictUndefined,
                               autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, pct=_pct, points=_points, pts=_pts, signed=_signed, int=_int, dataset=_dataset,
                       model=_model, plain=_plain)
    env.tests["finite"] = _finite
    return env


def render(notebook: str, block: str = "answer", **facts: Any) -> str:
    """One block of a notebook's template, filled from ``facts``; whitespace inside a paragraph is joined
    (templates break lines freely), paragraphs stay apart."""
    template = environment().get_template(f"{notebook}.md.j2")
    if block not in template.blocks:
        raise KeyError(f"template {notebook}.md.j2 has no block {block!r}; it has {sorted(template.blocks)}")
    text = "".join(template.blocks[block](template.new_context(facts)))
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def sentences(text: str) -> list[str]:
    """Sentences of rendered text: a full stop, ! or ? followed by a space and a capital (numbers such as
    "91.2%" and "0.8×" do not end one)."""
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip()) if s]


def check_answer(text: str) -> str:
    """The answer if it is at most four sentences and 90 words, else a ValueError saying which limit failed."""
    n_s, n_w = len(sentences(text)), len(text.split())
    if n_s > MAX_SENTENCES or n_w > MAX_WORDS:
        raise ValueError(f"answer has {n_s} sentences and {n_w} words (at most {MAX_SENTENCES} and {MAX_WORDS}): "
                         f"{text!r}")
    return text


def render_answer(notebook: str, **facts: Any) -> str:
    """The notebook's answer block. Over the limits it warns rather than fails: a long run is not lost to
    its wording (the unit and end-to-end tests hold the limits with `check_answer`)."""
    text = render(notebook, "answer", **facts)
    try:
        return check_answer(text)
    except ValueError as e:
        warnings.warn(str(e), stacklevel=2)
        return text


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def markdown(text: str, plain: bool = True):
    """Words for a notebook cell, shown as Markdown (never printed monospace): each line its own paragraph.
    ``plain`` text (a stage's sentences, names from user data) has Markdown's special characters escaped so
    that a name such as ``a_b*`` shows as written; a template's own Markdown passes with ``plain=False``."""
    from IPython.display import Markdown  # deferred: only a notebook (IPython) displays

    lines = [_MARKDOWN_SPECIAL.sub(r"\\\1", line) if plain else line for line in str(text).splitlines()]
    return Markdown("\n\n".join(line for line in lines if line.strip()))
