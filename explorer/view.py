"""What the Explorer shows, as HTML and Markdown strings: plain functions the tab calls, tested without a browser.

- `table_html`: one page of the selection as a table like the Hugging Face Dataset Viewer's: each
  cell a short preview with the search matches marked, a length column when the rows are sorted by
  a length, and (for small screens) the opened record right under its row.
- `record_html`: one record whole, with the matches marked; with the quality signals, the record's
  signals listed with their explanations and the text they point at underlined (a style of its own,
  not the search's yellow mark).
- `summary`, `resolve_page`, `export_note`: the words around them.

Everything a dataset holds is escaped; only the markup made here is HTML. Matches are found by
explorer.search (RE2 for a regex, the one folding for a literal), never by Python's `re`, and one
screen spends at most HIGHLIGHT_SECONDS marking them: the rest is shown unmarked.
"""
from __future__ import annotations

import html
import math
import re
import time

from dolly.data import REQUIRED_COLUMNS, TEXT_FIELDS
from explorer.query import BEST_MATCH, PAGE_SIZE, SORTS, ranks_by_relevance
from explorer.search import HIGHLIGHT_SECONDS, Search, parse_or_none
from explorer.signals import SIGNALS, Signals

CELL_CHARS = 160  # a cell shows this much of its text (around the first match); the row view shows all


# -- search matches -----------------------------------------------------------------------------
def _deadline() -> float:
    return time.monotonic() + HIGHLIGHT_SECONDS


def _marked(text: str, spans, start: int = 0, stop: int | None = None) -> str:
    """text[start:stop] as HTML, the parts inside `spans` (sorted (start, end) offsets in `text`) in <mark>."""
    stop = len(text) if stop is None else stop
    out, last = [], start
    for begin, end in spans:
        begin, end = max(begin, start), min(end, stop)
        if end <= begin:
            continue
        out.append(html.escape(text[last:begin]))
        out.append(f"<mark>{html.escape(text[begin:end])}</mark>")
        last = end
    out.append(html.escape(text[last:stop]))
    return "".join(out)


def _marked_with_signals(text: str, marks, flagged) -> str:
    """`text` as HTML: `marks` (search matches) in <mark>, `flagged` ((start, end, signal) spans) in
    <span class='dolly-flag'>. Spans may overlap: the text is cut at every boundary and each piece wrapped
    in what covers it, so the markup is always well nested."""
    cuts = sorted({0, len(text), *(x for b, e in marks for x in (b, e)), *(x for b, e, _ in flagged for x in (b, e))})
    out = []
    for begin, end in zip(cuts, cuts[1:]):
        if not 0 <= begin < end <= len(text):
            continue
        piece = html.escape(text[begin:end])
        if any(b <= begin and end <= e for b, e in marks):
            piece = f"<mark>{piece}</mark>"
        names = [name for b, e, name in flagged if b <= begin and end <= e]
        if names:
            names = list(dict.fromkeys(names))
            piece = (f"<span class='dolly-flag' data-signal='{html.escape(' '.join(names))}' "
                     f"title='{html.escape(', '.join(names))}'>{piece}</span>")
        out.append(piece)
    return "".join(out)


def mark(text: str, search: Search | None, deadline: float | None = None) -> str:
    """`text` as HTML with every match of `search` in <mark>; everything else escaped."""
    if not text:
        return ""
    return _marked(text, search.spans(text, deadline) if search is not None else [])


def highlight(text: str, search: str, regex: bool) -> str:
    """`text` as HTML with every match of `search` in <mark>; everything else escaped."""
    return mark(text, parse_or_none(search, regex), _deadline())


def cell_preview(text, search: Search | None = None, chars: int = CELL_CHARS, deadline: float | None = None) -> str:
    """A cell's HTML: the text on one line, cut to about `chars` around its first match, matches marked.
    The cut falls between words, never inside a match (a match that crosses it is shown whole)."""
    text = " ".join(str(text or "").split())
    spans = search.spans(text, deadline) if search is not None and text else []
    if len(text) <= chars:
        return _marked(text, spans)
    start = 0
    if spans and spans[0][1] > chars - 10:
        first = spans[0][0]
        start = max(0, min(first - chars // 4, len(text) - chars))  # the match, with some text before
        space = text.find(" ", start, first)
        start = space + 1 if start and space != -1 else start  # from a word's start
    stop = start + chars
    if stop < len(text):
        crossing = next((end for begin, end in spans if begin < stop < end), None)
        if crossing is not None:
            stop = crossing
        elif not text[stop].isspace():
            space = text.rfind(" ", start + chars // 2, stop)  # back to the end of the last whole word
            stop = space if space != -1 else stop
    return ("…" if start else "") + _marked(text, spans, start, stop).rstrip() + ("…" if stop < len(text) else "")


# -- the table ----------------------------------------------------------------------------------
def length_column(sort: str) -> str | None:
    """The field whose length the rows are sorted by (shown as a column), or None."""
    key = SORTS.get(sort)
    return key[0] if isinstance(key, tuple) else None


def sort_note(sort: str, search: str = "", regex: bool = False) -> str:
    """What the table's order is when it is not what `sort` says: "best match" without a literal search."""
    if sort != BEST_MATCH or ranks_by_relevance(parse_or_none(search, regex)):
        return ""
    why = "a regular expression has no words to rank by" if regex and search else "there is no search to rank by"
    return f"Best match ranks the rows a (non-regex) search finds; {why}, so the rows are in dataset order."


def signal_badges(names: list[str]) -> str:
    """A row's quality signals as small badges (each with its explanation as a tooltip), or ""."""
    if not names:
        return ""
    badges = "".join(f"<span class='dolly-badge' data-signal='{html.escape(n)}' title='{html.escape(SIGNALS.get(n, ''))}'>"
                     f"{html.escape(n)}</span>" for n in names)
    return f"<div class='dolly-badges' aria-label='quality signals: {html.escape(', '.join(names))}'>{badges}</div>"


def table_html(records: list[dict], search: str = "", regex: bool = False, sort: str = "dataset order",
               opened: dict | None = None, message: str = "", signals: Signals | None = None) -> str:
    """One page of rows as an HTML table. Each row's number is a button ("Open row N") so the keyboard
    can open rows too; `opened` (a record on this page) gets its whole text in a row right below,
    which the CSS shows only where the row view does not fit beside the table (phones). With `signals`,
    a flagged row carries badges naming its signals under its category (and the class `is-flagged`)."""
    found, deadline = parse_or_none(search, regex), _deadline()
    by_length = length_column(sort)
    headers = ["row"] + ([f"{by_length} length"] if by_length else []) + ["category", *TEXT_FIELDS]
    classes = ["c-row"] + (["c-len"] if by_length else []) + ["c-cat"] + [f"c-{f}" for f in TEXT_FIELDS]
    head = "".join(f"<th scope='col' class='{c}'>{html.escape(h)}</th>" for h, c in zip(headers, classes))
    body = []
    for record in records:
        row = int(record["row"])
        is_open = opened is not None and int(opened["row"]) == row
        cells = [f"<td class='c-row'><button type='button' class='dolly-open' aria-expanded='{str(is_open).lower()}' "
                 f"aria-label='Open row {row}'>{row}</button></td>"]
        if by_length:
            cells.append(f"<td class='c-len'>{len(str(record.get(by_length) or '')):,}</td>")
        flags = signals.of_row(row) if signals is not None and row < signals.num_rows else []
        cells.append(f"<td class='c-cat'>{html.escape(str(record['category']))}{signal_badges(flags)}</td>")
        for field in TEXT_FIELDS:
            preview = cell_preview(record.get(field), found, deadline=deadline)
            # dir='auto': an Arabic or Hebrew record reads right to left, its full stop on the left.
            cells.append(f"<td class='c-{field}' data-label='{field}'><div class='dolly-clamp' dir='auto'>{preview}</div></td>")
        classes_ = " ".join((["is-open"] if is_open else []) + (["is-flagged"] if flags else []))
        current = (" aria-current='true'" if is_open else "") + (f" class='{classes_}'" if classes_ else "")
        body.append(f"<tr data-row='{row}'{current}>{''.join(cells)}</tr>")
        if is_open:
            body.append(f"<tr class='dolly-detail'><td colspan='{len(headers)}'>{record_html(opened, search, regex, signals)}"
                        "<button type='button' class='dolly-try' data-action='try'>Try in chat</button></td></tr>")
    if not records:
        body.append(f"<tr class='dolly-none'><td colspan='{len(headers)}'>{html.escape(message or 'No rows to show.')}</td></tr>")
    note = sort_note(sort, search, regex)
    note = f"<p class='dolly-meta dolly-sort-note' role='note'>{html.escape(note)}</p>" if note else ""
    # Keyboard users reach the pager without tabbing through every row's button (explorer.tab's script).
    skip = "<button type='button' class='dolly-skip' data-skip='#explorer-next'>Skip to the pager</button>" if records else ""
    return (f"{note}{skip}<div class='dolly-table-wrap'><table class='dolly-table{' with-length' if by_length else ''}'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def record_html(record: dict | None, search: str = "", regex: bool = False, signals: Signals | None = None) -> str:
    """One record whole (every field, extra columns too), matches of the search marked; with `signals`,
    the record's signals listed with their explanations and the text they point at underlined."""
    if not record:
        return ("<div class='dolly-meta dolly-hint'>Click a row (or Tab to its number and press Enter) to read "
                "the whole record here and try it in the chat.</div>")
    found, deadline = parse_or_none(search, regex), _deadline()
    row = int(record["row"])
    # Headings continue the page's outline (h1 "open Dolly", then this record's h2 and its fields' h3).
    # The bar's buttons open the row above or below in the table, or close this one (Escape too).
    parts = [f"<div class='dolly-record'><div class='dolly-nav' role='toolbar' aria-label='Record'>"
             f"<h2 class='dolly-meta'>Row {row} · category <b>{html.escape(str(record['category']))}</b></h2>"
             f"<button type='button' data-nav='previous' aria-label='Previous row' title='Previous row (k)'>↑</button>"
             f"<button type='button' data-nav='next' aria-label='Next row' title='Next row (j)'>↓</button>"
             f"<button type='button' data-nav='close' aria-label='Close the record' title='Close (Escape)'>×</button>"
             f"</div>"]
    known = signals is not None and row < signals.num_rows
    spans = signals.spans_of(row) if known else []
    if known:
        parts.append(_signals_list(signals, row))
    for field in TEXT_FIELDS:
        text = str(record.get(field) or "")
        flagged = [(s.start, s.end, s.signal) for s in spans if s.field == field]
        if text and flagged:
            body = _marked_with_signals(text, found.spans(text, deadline) if found is not None else [], flagged)
        else:
            body = mark(text, found, deadline) if text else "(empty)"
        parts.append(f"<h3>{field}</h3><div class='dolly-text{'' if text else ' empty'}' dir='auto'>{body}</div>")
    for key, value in record.items():
        if key not in REQUIRED_COLUMNS and key != "row" and not str(key).startswith("_"):  # "_": the app's own
            parts.append(f"<h3>{html.escape(str(key))}</h3><div class='dolly-text' dir='auto'>{html.escape(str(value))}</div>")
    return "".join(parts) + "</div>"


def _signals_list(signals: Signals, row: int) -> str:
    """The record's quality signals, each with its explanation (and, for duplicates, the group's rows)."""
    names = signals.of_row(row)
    if not names:
        return "<div class='dolly-meta dolly-signals dolly-signals-none'>Quality: no signal flags this record.</div>"
    items = []
    for name in names:
        extra = ""
        if name == "duplicate":
            others = [int(r) for r in signals.group(row) if int(r) != row]
            if others:
                shown = ", ".join(f"{r:,}" for r in others[:10]) + (f" and {len(others) - 10:,} more" if len(others) > 10 else "")
                extra = f" Same group as row{'s' if len(others) > 1 else ''} {shown}."
        elif name == "language" and signals.language[row]:
            extra = f" Language found: {signals.language[row]} (main: {signals.main_language})."
        items.append(f"<li data-signal='{html.escape(name)}'><b>{html.escape(name)}</b>: "
                     f"{html.escape(SIGNALS.get(name, ''))}{html.escape(extra)}</li>")
    return (f"<div class='dolly-signals' role='note'><h3>Quality signals</h3><ul>{''.join(items)}</ul>"
            "<div class='dolly-meta'>The text a signal points at is <span class='dolly-flag'>underlined</span>.</div></div>")


# -- words around the table ---------------------------------------------------------------------
def summary(total: int, page: int, pages: int, all_rows: int) -> str:
    if all_rows == 0:
        return "**The dataset is empty.** Load another one with `python app.py --data path/to/file.jsonl`."
    if total == 0:
        return "**No matching rows.** Tick other categories or change the search."
    first = (page - 1) * PAGE_SIZE + 1
    return (f"**{total:,}** matching row{'s' if total != 1 else ''} of {all_rows:,} · showing {first:,}–{min(first + PAGE_SIZE - 1, total):,}"
            f" · page {page:,} of {pages:,}")


def resolve_page(typed, pages: int, current: int = 1) -> tuple[int, str]:
    """The page to show for what was typed in the page box, and a note when it is not that page.

    Never an error: the table must keep working whatever is typed. A number past either end shows
    that end; a fraction shows the page it falls in; anything else keeps the current page.
    """
    pages = max(1, int(pages))
    current = min(max(1, int(current or 1)), pages)
    text = str(typed if typed is not None else "").strip().replace(",", "")
    if not text:
        return current, f"Type a page number from 1 to {pages:,}, then press Enter."
    try:
        number = float(text)
    except ValueError:
        return current, f"“{str(typed).strip()[:40]}” is not a page number: type a whole number from 1 to {pages:,}."
    if not math.isfinite(number):
        return current, f"Type a page number from 1 to {pages:,}."
    if number < 1:
        return 1, f"Pages start at 1: showing page 1 of {pages:,}."
    if number > pages:
        return pages, f"There {'are' if pages != 1 else 'is'} {pages:,} page{'s' if pages != 1 else ''}: showing the last."
    whole = int(number)
    if whole != number:
        return whole, f"Pages are whole numbers: showing page {whole:,}."
    return whole, ""


def export_note(total: int, sort: str) -> str:
    """What the export will hold, in which order: it follows the table's sort."""
    rows = f"{total:,} row{'s' if total != 1 else ''}"
    if SORTS.get(sort) is None:
        order = "in dataset order (the table's order)"
    elif sort == BEST_MATCH:
        order = ("in the table's order (best match: the most relevant first for a search, dataset order "
                 "without one or for a regex)")
    else:
        order = f"in the table's order ({sort}), not dataset order; pick “dataset order” in Sort for that"
    return f"The file holds the {rows} of the selection, {order}, in the dataset's columns (no row numbers)."


# A parenthesised aside that names an exception class ("(ConnectionError: ... (LocalEntryNotFoundError))"),
# one level of nested parentheses allowed; and a bare "SomeError: " prefix.
_TECHNICAL_ASIDE = re.compile(r"\s*\((?:[^()]|\([^()]*\))*?\b[A-Z]\w*(?:Error|Exception)\b(?:[^()]|\([^()]*\))*\)")
_CLASS_PREFIX = re.compile(r"\b[A-Z]\w*(?:Error|Exception): ")


def plain_error(message: str) -> tuple[str, str]:
    """A load error for people: (the message without exception class names, the full message when it
    differed, for a "Technical details" line; else "")."""
    message = str(message or "").strip()
    plain = _CLASS_PREFIX.sub("", _TECHNICAL_ASIDE.sub("", message)).strip()
    return plain, (message if plain != message else "")
