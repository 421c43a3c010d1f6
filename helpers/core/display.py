"""How a number or a table reaches a reader: one formatter for every report table, the index page and
the header card, so a missing value is said in words, a whole number prints as one, and a wide or long
table stays inside the page (it scrolls in its own box; past ``COLLAPSE_ROWS`` rows it is collapsed).

Only the shown text changes: the values in a table, metrics.json and the CSV files stay as computed.
"""
from __future__ import annotations

import html
import math
from typing import Any

MISSING = "n/a"            # what a None/NaN cell says when its table gives no reason
COLLAPSE_ROWS = 25         # longer tables are shown collapsed, their size in the summary line
MAX_SHOWN_ROWS = 2000      # a report holds at most this many rows of one table (the summary says so)
_WHOLE_LIMIT = 2 ** 53     # floats up to here are exact integers when they have no fraction


def is_missing(v: Any) -> bool:
    """None, a float NaN, pandas' NA/NaT: a value the reader must be told is missing."""
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    try:
        import pandas as pd  # deferred: core does not need pandas to import

        return bool(pd.isna(v)) if not isinstance(v, (str, bytes, list, tuple, dict)) else False
    except (ImportError, TypeError, ValueError):
        return False


def _is_whole(v: Any) -> bool:
    return (isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < _WHOLE_LIMIT) \
        or (isinstance(v, int) and not isinstance(v, bool))


def format_value(v: Any, missing: str = MISSING) -> str:
    """One value as a reader sees it: ``missing`` for None/NaN, integers and whole floats without
    decimals and with thousands separators, other floats below 1 to 4 decimals (3 significant digits
    below 0.001), from 1 to 4 significant digits, from 1,000 with one decimal; anything else as ``str``."""
    if is_missing(v):
        return missing
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars -> Python numbers
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _is_whole(v):
        return f"{int(v):,}"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        if abs(v) >= 1e3:
            return f"{v:,.1f}"
        return f"{v:.4g}" if abs(v) >= 1 else f"{v:.4f}"
    return str(v)


def format_table(df, missing: str | None = None):
    """A copy of ``df`` with every cell formatted by `format_value` (index and column names kept): a
    whole number prints as an integer wherever it stands (report tables mix counts and rates in one
    column, as in a statistic-per-row table). ``missing`` defaults to the table's ``df.attrs["missing"]``
    (a builder can say why its cells are empty, e.g. "n/a (not run)")."""
    missing = missing or df.attrs.get("missing") or MISSING
    out = df.astype(object)   # a copy; text cells cannot go back into a float column
    for col in range(df.shape[1]):
        out.iloc[:, col] = [format_value(v, missing) for v in df.iloc[:, col].tolist()]
    return out


def table_html(df, missing: str | None = None, collapse_rows: int = COLLAPSE_ROWS) -> str:
    """``df`` as HTML for a report: formatted cells, every row and the full text of every cell, inside a
    box that scrolls sideways when the table is wider than the page; longer than ``collapse_rows`` rows,
    it sits in a collapsed ``<details>`` whose summary gives its size (and, past ``MAX_SHOWN_ROWS``,
    that only the first rows are in the report)."""
    shown = format_table(df.iloc[:MAX_SHOWN_ROWS], missing)
    table = shown.to_html(border=0, classes="wb-table", na_rep=MISSING, escape=True, max_rows=None,
                          max_cols=None, notebook=False)
    box = f'<div class="wb-table-box">{_mark_text_columns(table, df)}</div>'
    if len(df) <= collapse_rows:
        return box
    cols = df.shape[1]
    size = html.escape(f"{len(df):,} rows × {cols} column{'s' if cols != 1 else ''}"
                       + (f"; the first {MAX_SHOWN_ROWS:,} shown" if len(df) > MAX_SHOWN_ROWS else ""))
    return f'<details class="wb-long"><summary>the full table ({size}): click to open</summary>{box}</details>'


def _mark_text_columns(table: str, df) -> str:
    """Cells of a column holding words get class ``wb-text`` (left-aligned; numbers stay right-aligned).
    pandas writes one ``<td>`` per column in every body row (the index is ``<th>``), in column order."""
    text = [any(isinstance(v, str) for v in df.iloc[:, c].tolist()) for c in range(df.shape[1])]
    if not any(text):
        return table

    def mark(row: str) -> str:
        cells = row.split("<td>")
        return cells[0] + "".join(('<td class="wb-text">' if text[i] else "<td>") + cell
                                  for i, cell in enumerate(cells[1:]))

    return "<tr>".join(mark(row) for row in table.split("<tr>"))


TABLE_CSS = """
.wb-table-box{max-width:100%;overflow-x:auto;margin:4px 0 12px 0}
.wb-table-box table{border-collapse:collapse;font-size:.88em;font-variant-numeric:tabular-nums}
.wb-table-box th,.wb-table-box td{padding:3px 10px;border-bottom:1px solid #e1e4e8;text-align:right;
 vertical-align:top;white-space:nowrap}
.wb-table-box td.wb-text{text-align:left;min-width:9em;max-width:36em;white-space:normal;overflow-wrap:break-word}
.wb-table-box thead th{border-bottom:2px solid #8c959f}
details.wb-long>summary{cursor:pointer;color:#0969da;margin:4px 0}
"""


def install_notebook_display() -> None:
    """In an IPython kernel: pandas tables display through `table_html` (with `TABLE_CSS`), and
    pandas' own text form cuts no cell and hides no row. Outside IPython only the options change."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 250)
    html_formatter = ipython_formatter("text/html")
    if html_formatter is not None:
        from pandas.io.formats.style import Styler

        html_formatter.for_type(pd.DataFrame, lambda df: f"<style>{TABLE_CSS}</style>{table_html(df)}")
        # A Styler keeps the formats its notebook chose, except that whole numbers print as integers;
        # it gets the box that scrolls sideways.
        html_formatter.for_type(Styler, lambda st: f'<style>{TABLE_CSS}</style><div class="wb-table-box">'
                                                   f"{whole_columns_as_integers(st).to_html()}</div>")


def whole_columns_as_integers(styler, missing: str = "—"):
    """``styler`` with each float column whose values are all whole numbers (a count that became float
    because a cell is missing) shown as integers, its missing cells as ``missing``; other columns
    keep the formats already set."""
    data = styler.data
    for j in range(data.shape[1]):
        values = data.iloc[:, j]
        if values.dtype.kind == "f" and values.notna().any() and all(is_missing(v) or _is_whole(v) for v in values):
            try:
                styler = styler.format(lambda v: format_value(v, missing), subset=[data.columns[j]])
            except (KeyError, ValueError, TypeError):   # duplicated or nested column names: left as set
                continue
    return styler


def ipython_formatter(mime: str):
    """The running IPython kernel's display formatter for ``mime``; None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the pinned environment ships IPython
        return None
    shell = get_ipython()
    return None if shell is None else shell.display_formatter.formatters[mime]


def make_dataset_table(tables: dict):
    """Tables of the same kind for several datasets as one table, the dataset name its outer index level, so a
    notebook shows every dataset it ran; a single dataset's table is returned as it is."""
    import pandas as pd  # deferred: core does not need pandas to import

    if len(tables) == 1:
        return next(iter(tables.values()))
    return pd.concat(tables, names=["dataset"])
