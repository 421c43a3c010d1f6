"""What every notebook calls first: ``ctx = helpers.start("<stem>", globals())``."""
from __future__ import annotations

import ast
import difflib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.core import io, paths
from helpers.core.device import resolve_device
from helpers.core.display import format_value, install_notebook_display, ipython_formatter
from helpers.core.env import DEFAULT_THREADS, ENV_PROFILE, ENV_THREADS, THREAD_VARS
from helpers.core.errors import ParameterError, WorkbookError
from helpers.core.runcard import make_config
from helpers.evaluation.plots import tidy_figure
from helpers.workbook.params import check_value, load_notebook_spec


@dataclass
class Context:
    stem: str
    params: dict[str, Any]
    out_dir: Path
    device: str
    profile: str

    @property
    def run_dir(self) -> Path:
        """The run folder: earlier notebooks of the same run write beside this one."""
        return self.out_dir.parent

    def path(self, *parts: str) -> Path:
        """``out_dir / parts`` with its parent folders created; a path that would leave the output
        folder (``..``, an absolute part, a link pointing out) is an error."""
        p = self.out_dir.joinpath(*parts)
        if not paths.inside(self.out_dir, p):
            raise WorkbookError(f"{self.stem}: output path {'/'.join(map(str, parts))!r} leaves the output folder "
                                f"{self.out_dir}; output names must be plain names inside it")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def earlier(self, stem: str) -> Path:
        """Output folder of an earlier notebook in this run; a clear error if it has not run."""
        p = paths.upstream(self.run_dir, stem)
        if not p.is_dir():
            raise WorkbookError(f"{self.stem} needs the output of notebook {stem}, but {p} does not exist: "
                                f"run it first, e.g. `python -m helpers run --only {self.stem[:2]}`")
        return p

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as PNG in the output folder (atomically)."""
        path = self.path(name)
        tidy_figure(fig)   # the same object is shown in the notebook afterwards, tidied too
        with io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        return path

    def write_config(self, description: str, dataset: dict | None = None, model: dict | None = None,
                     training: dict | None = None, **extra: Any) -> Path:

        card = make_config(notebook=self.stem, description=description, params=self.params,
                           out_dir=str(self.out_dir), profile=self.profile, device=self.device,
                           dataset=dataset, model=model, training=training, **extra)
        return io.atomic_write_json(self.path("config.json"), card)

    def write_answer(self, answer: str, headline: dict[str, Any]):
        """The notebook's answer: a few sentences computed from its results and its two or three most
        important numbers. Written to answer.json (the run's index shows it) and displayed under
        ``## Answer``; the report moves this cell (tagged ``answer``) to the top."""
        from IPython.display import Markdown  # deferred: only a notebook (IPython) calls this

        io.atomic_write_json(self.path("answer.json"), {"answer": answer, "headline": headline})
        rows = "\n".join(f"- {k}: **{format_value(v)}**" for k, v in headline.items())
        return Markdown(f"## Answer\n\n{answer}\n\n{rows}")

    def write_metrics(self, metrics: dict[str, Any]):
        """Write metrics.json (flattened) and return it as a one-column table for display."""
        import pandas as pd

        flat = flatten(metrics)
        io.atomic_write_json(self.path("metrics.json"), flat)
        # What this notebook read of other notebooks' outputs, held by the runner against its **Reads:** line.
        io.atomic_write_json(self.path("reads.json"), paths.opened_upstream())
        return pd.DataFrame({"value": [io.jsonable(v) for v in flat.values()]},
                            index=pd.Index(list(flat), name="metric"))




def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; headline metrics stay one flat object."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def injected_names(namespace: dict[str, Any]) -> list[str]:
    """Names papermill injected into this kernel: its cell starts with "# Parameters" and is in
    IPython's input history. Empty outside papermill (JupyterLab, plain Python)."""
    history = namespace.get("In") or namespace.get("_ih") or []
    for source in reversed(list(history)):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def check_injected(spec, namespace: dict[str, Any]) -> None:
    """A name given to papermill (``-p``, ``-f``, or the runner) that the notebook does not declare is an
    error with a did-you-mean, so a typo never runs silently with the default."""
    for name in injected_names(namespace):
        if name not in spec.params:
            hint = difflib.get_close_matches(name, list(spec.params), n=1, cutoff=0.5)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ParameterError(f"{spec.stem}: papermill was given parameter {name!r}, which this notebook "
                                 f"does not declare{did} (declared: {', '.join(spec.params)})")


def start(stem: str, namespace: dict[str, Any]) -> Context:
    """Validate the notebook's parameters as they stand in `namespace` and set the run up."""
    spec = load_notebook_spec(stem)
    check_injected(spec, namespace)
    params: dict[str, Any] = {}
    for name, ps in spec.params.items():
        if name not in namespace:
            raise WorkbookError(f"{stem}: parameter {name!r} is declared but not defined; run the parameters cell")
        params[name] = check_value(ps, namespace[name], f"{stem} parameters")
    out = Path(params.get("out_dir") or paths.REPORTS / "interactive" / stem).resolve()
    out.mkdir(parents=True, exist_ok=True)
    set_kernel_threads()
    if "seed" in params:
        seed_everything(int(params["seed"]))
    device = str(resolve_device(str(params.get("device", "cpu"))))
    _style_plots()
    return Context(stem=stem, params=params, out_dir=out, device=device,
                   profile=os.environ.get(ENV_PROFILE, "interactive"))


def _style_plots() -> None:
    import matplotlib

    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.grid": True,
                                "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
    install_notebook_display()
    _tidy_displayed_figures()


def _tidy_displayed_figures() -> None:
    """A figure a helper displays itself (07's picker redraws on every pick) goes through `tidy_figure`
    too, so a name with ``$`` or ``_`` in a label never fails the draw with a mathtext error."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    # pyplot loads its backend at the first figure; the inline backend then registers its PNG formatter,
    # which is the one wrapped below (a figure made and closed now shows nowhere).
    plt.close(plt.figure())

    png = ipython_formatter("image/png")
    if png is None:
        return
    try:
        draw = png.lookup_by_type(Figure)
    except KeyError:
        return
    if not getattr(draw, "_tidies", False):
        tidied = lambda fig: draw(tidy_figure(fig))  # noqa: E731
        tidied._tidies = True
        png.for_type(Figure, tidied)


def set_kernel_threads() -> int:
    """torch's thread count: the runner's (``PAIRWISE_THREADS``) in a run, and the same default in a
    kernel JupyterLab started, which would otherwise use every core and give other numbers. BLAS reads
    its thread variables when it loads, so they are set only where it has not loaded yet."""
    import torch

    n = int(os.environ.get(ENV_THREADS) or DEFAULT_THREADS)
    torch.set_num_threads(n)
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))
    os.environ.setdefault(ENV_THREADS, str(n))   # worker processes started from here inherit it
    return n
