"""A kernel JupyterLab started behaves as the runner's: the same thread count, the same table display."""
import os

import pandas as pd
import torch

from helpers.core.env import DEFAULT_THREADS, ENV_THREADS, THREAD_VARS
from helpers.workbook.notebook import set_kernel_threads
from helpers.workbook.runner import DEFAULT_THREADS as RUNNER_DEFAULT


def test_lab_kernel_gets_the_runners_default_thread_count(monkeypatch):
    old = torch.get_num_threads()
    for var in (ENV_THREADS, *THREAD_VARS):
        monkeypatch.delenv(var, raising=False)        # as in a kernel Lab started: nothing set
    try:
        assert set_kernel_threads() == DEFAULT_THREADS == RUNNER_DEFAULT
        assert torch.get_num_threads() == DEFAULT_THREADS
        assert os.environ[ENV_THREADS] == str(DEFAULT_THREADS)   # worker processes budget the same
        assert all(os.environ[v] == str(DEFAULT_THREADS) for v in THREAD_VARS)
        monkeypatch.setenv(ENV_THREADS, "1")                   # under the runner its --threads wins
        assert set_kernel_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)


def test_notebook_display_cuts_no_cell_and_hides_no_row():
    from helpers.core.display import install_notebook_display

    with pd.option_context("display.max_colwidth", 50, "display.max_rows", 60):
        install_notebook_display()
        assert pd.get_option("display.max_colwidth") is None and pd.get_option("display.max_rows") >= 137


def test_kernel_shows_tables_and_figures_through_the_report_formatters():
    """In an IPython shell with the inline backend's figure format (as in Lab and papermill): a DataFrame displays
    as the report table, and a figure whose label mathtext cannot parse still draws."""
    import matplotlib
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats

    from helpers.workbook.notebook import _style_plots

    shell = InteractiveShell.instance()
    try:
        select_figure_formats(shell, {"png"})              # what the inline backend registers
        _style_plots()
        table = shell.display_formatter.format(pd.DataFrame({"acc": [0.5, None], "n": [2.0, 3.0]}))[0]
        assert 'class="wb-table-box"' in table["text/html"] and "n/a" in table["text/html"]
        styled = pd.DataFrame({"acc": [0.5, None]}).style.format(precision=3, na_rep="—")
        shown = shell.display_formatter.format(styled)[0]["text/html"]
        assert 'class="wb-table-box"' in shown and "0.500" in shown and "—" in shown   # its own formats kept
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([1, 2], [1, 2])
        ax.set_xticks([1, 2], ["lr_$_$", "$val_cos"])      # parse error without tidying
        assert "image/png" in shell.display_formatter.format(fig)[0]
        plt.close(fig)
        _style_plots()                                       # a second start does not wrap twice
        png = shell.display_formatter.formatters["image/png"]
        assert png.lookup_by_type(type(fig))._tidies
    finally:
        InteractiveShell.clear_instance()
        matplotlib.use("Agg")


def test_a_real_kernel_draws_a_figure_whose_label_mathtext_cannot_parse():
    """In a kernel the inline backend registers its PNG formatter only when pyplot loads it, after the
    notebook's first helpers call; the figure hook must survive that (07's picker failed without it)."""
    import nbformat
    from nbclient import NotebookClient

    from helpers.core import paths

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from helpers.workbook.notebook import _style_plots\n_style_plots()"),
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfrom IPython.display import display\n"
                                          "fig, ax = plt.subplots()\nax.plot([1, 2], [1e-3, 1e-5])\nax.set_yscale('log')\n"
                                          "ax.set_xticks([1, 2], ['lr_$_$', '$val_cos'])\ndisplay(fig)\nplt.close(fig)")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(paths.PROJ_ROOT)}}).execute()
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["display_data"] and "image/png" in outputs[0].data
