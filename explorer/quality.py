"""The Explorer's Quality section: the filter by quality signal, its legend, and the signals-per-category chart.

The signals (explorer.signals) are computed in the background after the dataset loads
(explorer.loader's `DatasetLoader.quality`), so this section starts off saying how far along they are
("computing quality signals… 42%"), turned off, while the table already works; a timer polls
until they are there, then turns it on with each signal's count. explorer.tab places these components
and wires them; the words and numbers come from the plain functions here, tested without a browser.
"""
from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from explorer.loader import DatasetLoader
from explorer.query import Index, Selection
from explorer.signals import SIGNALS

CSS = """
#explorer-quality .subdued, #explorer-quality input::placeholder { color: #4b5563 !important; opacity: 1; }
.dark #explorer-quality .subdued, .dark #explorer-quality input::placeholder { color: #d1d5db !important; }
.dolly-heat { border-collapse: collapse; font-size: .85rem; font-variant-numeric: tabular-nums; }
.dolly-heat th, .dolly-heat td { padding: .25rem .5rem; border: 1px solid var(--border-color-primary); text-align: right; }
.dolly-heat th[scope=row] { text-align: left; white-space: nowrap; font-weight: 600; }
.dolly-heat thead th { font-weight: 600; white-space: nowrap; }
.dolly-heat td.zero { color: #6b7280; }
.dolly-badges { display: flex; flex-wrap: wrap; gap: .2rem; margin-top: .2rem; }
.dolly-badge { font-size: .7rem; line-height: 1.2; padding: 0 .3rem; border-radius: 999px; white-space: nowrap;
               border: 1px solid #9a3412; color: #7c2d12; background: #fff7ed; cursor: help; }
.dark .dolly-badge { color: #fed7aa; background: #431407; border-color: #fdba74; }
/* What a signal points at: a wavy red underline, unlike the search's yellow <mark>. */
.dolly-flag { text-decoration: underline wavy #b91c1c; text-decoration-thickness: 2px; text-underline-offset: 3px;
              background: rgba(185, 28, 28, .08); }
.dolly-signals ul { margin: .2rem 0 .2rem 1.1rem; padding: 0; }
.dolly-signals li { margin: .15rem 0; }
#explorer-quality-legend dl { margin: .3rem 0; }
#explorer-quality-legend dt { font-weight: 600; }
#explorer-quality-legend dd { margin: 0 0 .35rem 1rem; }
"""

READY_INFO = "Rows any chosen signal flags (none = all); counts in this selection."


def choices(counts: dict[str, int] | None, not_computed=()) -> list[tuple[str, str]]:
    """The filter's choices: each signal with its count in the selection (names alone while computing);
    a signal in `not_computed` says so instead of showing a count of 0 that would mean "none found"."""
    if counts is None:
        return [(name, name) for name in SIGNALS]
    return [(f"{name} (not computed)" if name in not_computed else f"{name} ({counts.get(name, 0):,})", name)
            for name in SIGNALS]


def not_computed(index: Index | None) -> tuple[str, ...]:
    """Signals the Explorer did not compute: `too_long` needs the training's tokenizer and --max-length."""
    signals = index.signals if index is not None else None
    return ("too_long",) if signals is not None and signals.token_counts is None else ()


def info(records) -> str:
    """The line under the filter: how far along the signals are, or how the filter works once they are there.
    `records`: what the signals are of, with their `quality` (a DatasetLoader, or an explorer.sources.Source)."""
    return records.quality.status() or READY_INFO


def legend_html() -> str:
    """What each signal means, folded away under the filter."""
    items = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" for name, text in SIGNALS.items())
    return (f"<details id='explorer-quality-legend'><summary>What the quality signals mean</summary>"
            f"<dl>{items}</dl></details>")


def filter_update(index: Index | None, base: Selection | None, records, chosen=None) -> dict:
    """The Quality filter for this selection (`base`: categories + search, no quality filter): counts, on
    once the signals are there. The choice is set to `chosen` when given (a link), else left as it is:
    a signal picked while the counts were on their way must stay picked."""
    counts = index.signal_counts(base) if index is not None and base is not None else None
    ready = index is not None and index.signals is not None
    extra = {} if chosen is None else {"value": [name for name in chosen if name in SIGNALS]}
    return gr.update(choices=choices(counts, not_computed(index)), interactive=ready, info=info(records), **extra)


def chart_frame(index: Index, selection: Selection) -> pd.DataFrame | None:
    """Flagged rows per category and signal in `selection`, for the chart; None until ready."""
    return index.signals_per_category(selection)


def chart_html(frame: pd.DataFrame | None, categories: list[str]) -> str:
    """Signals per category as a heat table: a row per category, a column per signal, each cell the
    flagged rows, shaded by its share of the largest count. A table, not a picture: screen readers read
    it, and the counts are exact."""
    if frame is None:
        return "<p class='dolly-meta'>The quality signals are still being computed.</p>"
    counts = {(c, s): int(n) for c, s, n in frame.itertuples(index=False)}
    most = max(counts.values(), default=0)
    head = "".join(f"<th scope='col' title='{html.escape(SIGNALS[name])}'>{html.escape(name)}</th>" for name in SIGNALS)
    body = []
    for category in categories:
        cells = []
        for name in SIGNALS:
            n = counts.get((category, name), 0)
            shade = f" style='background: rgba(194, 65, 12, {0.08 + 0.5 * n / most:.2f})'" if n and most else ""
            cells.append(f"<td class='{'zero' if not n else 'some'}' data-signal='{html.escape(name)}'{shade}>{n:,}</td>")
        body.append(f"<tr data-category='{html.escape(category)}'><th scope='row'>{html.escape(category)}</th>{''.join(cells)}</tr>")
    # Focusable: on a phone the table scrolls sideways, and keyboard users must be able to scroll it too.
    return (f"<div class='dolly-table-wrap' tabindex='0' role='region' aria-label='Quality signals per category'>"
            f"<table class='dolly-heat'><caption class='dolly-meta'>Quality signals per "
            f"category: flagged rows of the selection</caption><thead><tr><th scope='col'>category</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def build_filter(dataset: DatasetLoader, index: Index | None) -> gr.Dropdown:
    """The Quality filter as the page first draws it (`index`: the data if already loaded). A one-line
    multi-select, so the table keeps its place on the first screen."""
    counts = index.signal_counts(index.select()) if index is not None else None
    return gr.Dropdown(choices(counts, not_computed(index)), value=[], multiselect=True, label="Quality",
                       info=info(dataset), elem_id="explorer-quality", interactive=counts is not None,
                       scale=0, min_width=320)


def build_chart() -> gr.HTML:
    return gr.HTML(chart_html(None, []), elem_id="explorer-quality-chart")


def build_legend() -> gr.HTML:
    return gr.HTML(legend_html(), elem_id="explorer-quality-help")


def build_timer(dataset: DatasetLoader) -> gr.Timer:
    """Polls the signals until they are there (then the tick turns itself off)."""
    return gr.Timer(1.0, active=dataset.quality.state == "loading")
