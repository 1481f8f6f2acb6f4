"""The shared table and figure pieces of hybridnb.studies.seed_tables that every report's tables go through:
the wide pivot, the summary cell and system table, and the grouped bar chart with intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hybridnb.studies import seed_tables


def _long(rows):
    return pd.DataFrame([{"baseline": b, "column": c, "diff": d} for b, c, d in rows])


def test_wide_keeps_the_long_frames_order_and_fills_what_a_row_lacks():
    """Rows and columns in their first order in the long frame (not sorted, as pivot does); ``order`` picks
    and orders the columns; ``fill`` marks a missing cell."""
    frame = _long([("X-Y", "z col", 0.5), ("X-Y", "a col", -0.25), ("En-En", "a col", 1.0)])
    cell = lambda r: f"{r.diff:+.2f}"  # noqa: E731
    wide = seed_tables.wide(frame, "baseline", cell)
    assert list(wide.index) == ["X-Y", "En-En"] and list(wide.columns) == ["z col", "a col"]
    assert wide.loc["X-Y", "a col"] == "-0.25" and pd.isna(wide.loc["En-En", "z col"])
    filled = seed_tables.wide(frame, "baseline", cell, order=["a col", "absent", "z col"], fill="n/a")
    assert list(filled.columns) == ["a col", "z col"] and filled.loc["En-En", "z col"] == "n/a"
    assert seed_tables.wide(frame.iloc[:0], "baseline", cell).empty


def test_wide_takes_several_row_columns():
    frame = pd.DataFrame([{"backbone": b, "dataset": "xquad-r", "column": c, "diff": 0.1}
                          for b in ("labse", "e5") for c in ("mono map", "cross map")])
    wide = seed_tables.wide(frame, ["backbone", "dataset"], lambda r: str(r.diff))
    assert list(wide.index) == [("labse", "xquad-r"), ("e5", "xquad-r")]
    assert list(wide.index.names) == ["backbone", "dataset"] and list(wide.columns) == ["mono map", "cross map"]


def test_summary_cell_and_system_table_print_one_way():
    """Rank distance with one decimal, the rest with three, n/a for a column a system lacks; a zero-shot row
    has no seeds."""
    entry = {"mean": 0.51234, "low": 0.5, "high": 0.52, "per_seed": [0.51, 0.5147]}
    assert seed_tables.summary_cell(entry, "mono_ap") == "0.512 [0.500, 0.520]"
    assert seed_tables.summary_cell({**entry, "mean": 12.34}, "rank_distance") == "12.3 [0.5, 0.5]"
    assert seed_tables.summary_cell(None, "t2i R@10") == "n/a"
    table = seed_tables.system_table({"zero-shot": {"mono_ap": {**entry, "per_seed": [0.5]}},
                                      "hybrid": {"mono_ap": entry}}, ["mono_ap"], {"hybrid": "ours"})
    assert table.loc["zero-shot", "seeds"] == "—" and table.loc["ours", "seeds"] == 2
    assert table.loc["ours", seed_tables.column("mono_ap")] == "0.512 [0.500, 0.520]"


def test_grouped_bars_centre_groups_on_their_ticks_and_write_na():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, series = ["mono", "cross"], ["e5", "bm25", "labse"]
    mean = pd.DataFrame([[0.5, 0.6, 0.7], [0.4, math.nan, 0.3]], index=groups, columns=series)
    low, high = mean - 0.1, mean + 0.1
    low.loc["mono", "e5"] = math.nan  # no interval: no error bar, the bar still drawn
    fig, ax = plt.subplots()
    x = seed_tables.grouped_bars(ax, mean, low, high)
    assert x.shape == (2, 3) and np.allclose(x.mean(axis=1), [0, 1])  # each group around its tick
    assert [t.get_text() for t in ax.get_xticklabels()] == groups
    assert [t.get_text() for t in ax.texts] == ["n/a"] and math.isclose(ax.texts[0].xy[0], x[1, 1])
    assert len(ax.patches) == 6 and [h.get_label() for h in ax.get_legend_handles_labels()[0]] == series
    plt.close(fig)
