"""What the Explorer's charts plot, as plain data frames (the tab draws them; nothing here knows Gradio).

Text lengths in dolly-15k have a long tail (most responses are a few hundred characters, a few
run to tens of thousands), so equal bins from 0 to the longest put almost every row in the first
bar. Bins here span the shortest length to the 98th percentile in round widths (1, 2 or 5 × 10^k),
and the tail beyond shares one last bar, labelled "≥ N".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

MAX_BINS = 12
TAIL_PERCENTILE = 98


def _round_width(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `raw`."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= raw:
                return step * factor
        step *= 10


def length_histogram(lengths, max_bins: int = MAX_BINS) -> pd.DataFrame:
    """Rows per length bin: columns `characters` (the label), `start` (first length in the bin), `rows`.

    Labels are padded so that sorting them as text (as the bar chart does) keeps numeric order, and
    the tail bar ("≥ N") sorts last. No lengths: an empty frame.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return pd.DataFrame({"characters": pd.Series([], dtype="str"), "start": pd.Series([], dtype="int64"),
                             "rows": pd.Series([], dtype="int64")})
    longest = int(lengths.max())
    cap = int(np.percentile(lengths, TAIL_PERCENTILE))
    width = _round_width(max(cap - int(lengths.min()) + 1, 1) / max_bins)
    first = int(lengths.min()) // width * width  # no run of empty bars below the shortest text
    bins = max(1, -(-(cap + 1 - first) // width))  # bins of `width` that cover first..cap
    end = first + bins * width
    tail = longest >= end  # some rows lie beyond the last full bin
    counts = np.bincount(np.minimum((lengths - first) // width, bins), minlength=bins + 1)
    starts = [first + i * width for i in range(bins)]
    pad = len(f"{starts[-1]:,}")
    labels = [f"{start:>{pad},}–{start + width - 1:,}" if width > 1 else f"{start:>{pad},}" for start in starts]
    rows = counts[:bins].tolist()
    if tail:
        labels.append(f"≥ {end:,}")
        starts.append(end)
        rows.append(int(counts[bins]))
    return pd.DataFrame({"characters": labels, "start": starts, "rows": rows})


# Vega picks about seven ticks for a 280 px chart: on an axis from 0 to 1 (one row) that is 0, 0.2, 0.4…,
# fractions of a row. An axis that reaches at least WHOLE_TICKS has steps of 1 or more (Vega's steps are
# 1, 2 or 5 × 10^k of at least span / ticks), so every tick is a whole number.
WHOLE_TICKS = 10


def count_axis(counts) -> list:
    """The y_lim of a chart of counts: [0, WHOLE_TICKS] when the largest count is below it, else [0, None]
    (Vega's own rounded top)."""
    largest = max((int(c) for c in counts), default=0)
    return [0, WHOLE_TICKS] if largest < WHOLE_TICKS else [0, None]
