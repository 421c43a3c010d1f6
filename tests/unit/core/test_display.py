"""The report tables' formatter: missing values in words, whole numbers as integers, nothing cut."""
import math

import numpy as np
import pandas as pd
import pytest

from helpers.core.display import (COLLAPSE_ROWS, MAX_SHOWN_ROWS, format_table, format_value, table_html,
                                  whole_columns_as_integers)


@pytest.mark.parametrize("value, shown", [
    (None, "n/a"), (float("nan"), "n/a"), (np.float32("nan"), "n/a"), (pd.NA, "n/a"), (pd.NaT, "n/a"),
    (2.0, "2"), (np.float64(2.0), "2"), (np.int64(12345), "12,345"), (-3, "-3"), (True, "yes"),
    (0.98123, "0.9812"), (0.05, "0.0500"), (1e-5, "1e-05"), (283.14, "283.1"), (36.725, "36.73"),
    (12345.678, "12,345.7"), (math.inf, "∞"), ("text", "text"),
])
def test_format_value(value, shown):
    assert format_value(value) == shown


def test_missing_says_why_and_metric_values_are_not_changed():
    df = pd.DataFrame({"n": [2.0, np.nan], "acc": [0.9812345, 1.0], "who": [None, "b"]})
    df.attrs["missing"] = "n/a (not run)"
    before = df.copy()
    shown = format_table(df)
    assert shown["n"].tolist() == ["2", "n/a (not run)"]          # whole numbers print as integers
    assert shown["acc"].tolist() == ["0.9812", "1"]
    assert shown["who"].tolist() == ["n/a (not run)", "b"]
    pd.testing.assert_frame_equal(df, before)                   # the values themselves are untouched
    assert format_table(df, missing="n/a (no baseline)")["n"][1] == "n/a (no baseline)"


def test_table_html_keeps_every_row_and_whole_cells_and_scrolls():
    long = "not distinguishable from the baseline (p = 0.51, Holm over 3, alpha 0.05)"
    short = pd.DataFrame({"verdict": [long] * 3, "x": [np.nan, 1.0, 2.0]})
    out = table_html(short)
    assert long in out and "..." not in out and "None" not in out and "nan" not in out.lower()
    assert out.startswith('<div class="wb-table-box">') and "<details" not in out
    rows = COLLAPSE_ROWS + 112
    tall = pd.DataFrame({"metric": [f"m{i}" for i in range(rows)], "value": np.arange(rows, dtype=float)})
    out = table_html(tall)
    assert out.startswith("<details") and f"{rows} rows × 2 columns" in out
    assert out.count("</tr>") == rows + 1 and f"m{rows - 1}" in out and ">136<" in out


def test_word_columns_are_marked_left_aligned_numbers_not():
    df = pd.DataFrame({"n": [1, 2], "verdict": ["better", None]}, index=pd.Index(["a", "b"], name="row"))
    out = table_html(df)
    assert out.count('<td class="wb-text">') == 2 and out.count("<td>") == 2
    assert '<td class="wb-text">n/a</td>' in out and "<td>1</td>" in out


def test_a_huge_table_says_how_much_of_it_the_report_holds():
    df = pd.DataFrame({"x": np.arange(MAX_SHOWN_ROWS + 5)})
    out = table_html(df)
    assert f"{MAX_SHOWN_ROWS + 5:,} rows × 1 column; the first {MAX_SHOWN_ROWS:,} shown" in out
    assert out.count("</tr>") == MAX_SHOWN_ROWS + 1


def test_a_styled_table_prints_its_counts_as_integers_and_keeps_its_other_formats():
    df = pd.DataFrame({"seeds": [2.0, np.nan], "acc": [0.76751, np.nan]})
    out = whole_columns_as_integers(df.style.format(precision=4, na_rep="—")).to_html()
    assert ">2<" in out and "2.0000" not in out and "0.7675" in out and "nan" not in out.lower()


def test_tables_of_several_datasets_are_shown_as_one_with_the_dataset_named():

    from helpers.core.display import make_dataset_table

    a = pd.DataFrame({"acc": [0.9, 0.8]}, index=pd.Index(["stage1", "stage2"], name="arch"))
    assert make_dataset_table({"digits": a}) is a                       # one dataset: its table as it is
    both = make_dataset_table({"digits": a, "scenes": a * 0.5})
    assert both.index.names == ["dataset", "arch"] and len(both) == 4
    assert both.loc[("scenes", "stage2"), "acc"] == 0.4                  # every dataset's rows, none dropped
