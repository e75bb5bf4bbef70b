"""Filter, search, sort and page a dolly-shaped dataset, fast enough for a million rows.

The Explorer tab and the /explore and /export API endpoints call `Index.select` and `Index.page`;
nothing here knows about Gradio. The work is done once at load so that each query is a few
vectorised Arrow scans:

- rows are stored grouped by category (a stable sort), so a category filter is a zero-copy slice;
- instruction, context and response are joined and folded once (explorer.search.fold: NFC, lower
  case; the query is folded by the same function) into one "haystack" string per row, so a literal
  search is one scan of pre-folded text. Only a literal that contains a character of the separator
  (a newline or NUL), and every regular expression, are searched field by field instead, so that no
  search ever matches the separator or across fields;
- text lengths are precomputed for sorting and charts;
- "best match" ranks the rows a literal search selected by BM25 over instruction, context and
  response (the `bm25s` package, on the folded haystack, so ranking sees text as search does),
  ties in dataset order. Its index is built on first use (seconds at 15k rows, about a minute at
  1M) and kept. With no search or a regex there is nothing to rank by: dataset order;
- the last few selections (categories, search, regex, sort) are cached as arrays of row ids, so
  paging through a selection costs one page, not one scan;
- a scan runs in chunks sized to take about _CHUNK_SECONDS each and stops at QUERY_SECONDS with a
  QueryError: RE2 is linear, but some patterns cost ~30 µs per character, hours at a million rows.
  Arrow releases the GIL, so the rest of the app keeps answering while a scan runs;
- the quality signals (explorer.signals) arrive later, computed in the background after the load
  (explorer.loader): `set_signals` attaches them, and a selection can then keep only the rows that any
  of some signals flags (`quality`). Until then a quality filter is a SignalsNotReady error.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bm25s
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dolly.data import DOLLY_CATEGORIES, TEXT_FIELDS
from dolly.numbers import whole_number
from explorer.search import MAX_SEARCH_CHARS, Search, SearchError, fold, parse, re2_escape  # noqa: F401 (re-exported)
from explorer.signals import SIGNALS, Signals

PAGE_SIZE = 20
# Between fields in the haystack. A literal match that touches it must contain a newline or a NUL,
# and such literals are searched field by field (see _match), so results never depend on it.
FIELD_SEPARATOR = "\n\x00\n"
BEST_MATCH = "best match"
# bm25s indexes in Python, about 70 µs a row here, holding the GIL: 100,000 rows is a few seconds on the
# first "best match", once. A million would hold every user back for minutes (and take GBs), so larger
# datasets are refused with a message rather than ranked.
MAX_BEST_MATCH_ROWS = 100_000
SORTS = {
    "dataset order": None,
    BEST_MATCH: BEST_MATCH,  # BM25 relevance to a literal search; dataset order without one
    **{f"{field} length, longest first": (field, True) for field in TEXT_FIELDS},
    **{f"{field} length, shortest first": (field, False) for field in TEXT_FIELDS},
}
DEFAULT_SORT = "dataset order"
_CACHE_SIZE = 8
_PIECE_ROWS = 50_000
# A query's scan stops after QUERY_SECONDS with a message; it checks the time between chunks of rows,
# each sized in characters of text (from _FIRST_CHUNK_CHARS, growing at most 4x a step, up to a whole
# piece) to take about _CHUNK_SECONDS at the speed the pattern showed so far, so a slow pattern
# overshoots the limit by about one chunk, not by one piece of 50,000 rows. Characters, not rows:
# rows range from a few words to long passages.
QUERY_SECONDS = 10.0
_CHUNK_SECONDS = 0.1
_FIRST_CHUNK_CHARS = 2_000
# Arrow releases the GIL, so the per-category scans of one query run side by side on two cores.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="explorer-scan")


class QueryError(ValueError):
    """A query the data cannot answer (unknown category, bad regex, page out of range, ...)."""


class SignalsNotReady(QueryError):
    """A quality filter asked for before the dataset's quality signals are computed."""


@dataclass(frozen=True)
class Selection:
    """The rows matching one (categories, search, regex, sort, quality): their dataset row numbers, in order."""

    categories: tuple[str, ...]
    search: str
    regex: bool
    sort: str
    rows: np.ndarray  # int64 dataset row numbers (0-based), in display order
    quality: tuple[str, ...] = ()  # signals ticked: only rows flagged by any of them (empty = no such filter)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


class Index:
    """A loaded dataset, prepared for queries. Build it once from `load_records`' DataFrame."""

    def __init__(self, frame: pd.DataFrame):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        categories = table["category"].combine_chunks()
        counts = pc.value_counts(categories).to_pylist()
        found = {item["values"]: item["counts"] for item in counts}
        # Dolly's eight first, in their usual order; any others after, alphabetically.
        self.categories = [c for c in DOLLY_CATEGORIES if c in found] + sorted(c for c in found if c not in DOLLY_CATEGORIES)
        self.counts = {c: found[c] for c in self.categories}
        self.columns = list(table.column_names)
        self.num_rows = table.num_rows

        codes = np.asarray(pc.index_in(categories, value_set=pa.array(self.categories, pa.string())))
        order = np.argsort(codes, kind="stable")  # rows grouped by category, dataset order inside
        self._table = table.take(pa.array(order)).combine_chunks()
        self._row_ids = order.astype(np.int64)  # position in _table -> dataset row number
        self._position = np.empty_like(self._row_ids)  # dataset row number -> position in _table
        self._position[order] = np.arange(len(order))
        bounds = np.searchsorted(codes[order], np.arange(len(self.categories) + 1))
        self._slices = {c: (int(bounds[i]), int(bounds[i + 1])) for i, c in enumerate(self.categories)}

        # Haystack pieces of at most _PIECE_ROWS rows, each inside one category: a category filter
        # picks pieces, and the two scan threads get work of similar size.
        spans = [(c, start, min(start + _PIECE_ROWS, stop)) for c, (start, stop) in self._slices.items()
                 for start in range(start, stop, _PIECE_ROWS)]
        self._pieces: dict[str, list[tuple[int, pa.Array]]] = {c: [] for c in self.categories}
        for (category, start, _), text in zip(spans, _POOL.map(lambda span: self._folded_text(*span[1:]), spans)):
            self._pieces[category].append((start, text))
        # Lengths in characters, by dataset row number, for sorting and charts.
        self.lengths = {}
        for field in TEXT_FIELDS:
            by_position = np.asarray(pc.utf8_length(self._table[field]).to_numpy(zero_copy_only=False), dtype=np.int32)
            self.lengths[field] = by_position[self._position]
            text_chars = by_position.astype(np.int64) if field == TEXT_FIELDS[0] else text_chars + by_position
        # Characters of text before each position: scans are cut into chunks of similar work.
        self._chars_before = np.concatenate([[0], np.cumsum(text_chars)]) if self.num_rows else np.zeros(1, np.int64)
        self._cache: OrderedDict[tuple, Selection] = OrderedDict()
        self._lock = threading.Lock()
        self._bm25: bm25s.BM25 | None = None  # built on the first "best match" (see ranks)
        self._bm25_lock = threading.Lock()
        self.signals: Signals | None = None  # set by set_signals once computed (see explorer.loader)

    def frame(self) -> pd.DataFrame:
        """The dataset in dataset order, as the DataFrame it was built from (row i = dataset row i)."""
        return self._table.take(pa.array(self._position)).to_pandas()

    def set_signals(self, signals: Signals) -> None:
        """Attach the quality signals computed over `frame()` (one flag per dataset row)."""
        if signals.num_rows != self.num_rows:
            raise ValueError(f"The signals cover {signals.num_rows:,} rows; the dataset has {self.num_rows:,}.")
        self.signals = signals

    def _folded_text(self, start: int, stop: int) -> pa.Array:
        rows = self._table.slice(start, stop - start)
        texts = [rows[f].cast(pa.large_string()) for f in TEXT_FIELDS]
        joined = pc.binary_join_element_wise(*texts, pa.scalar(FIELD_SEPARATOR, pa.large_string()))
        return fold(joined.combine_chunks())

    # -- queries -----------------------------------------------------------------------------
    def select(self, categories=(), search: str = "", regex: bool = False, sort: str = DEFAULT_SORT,
               quality=()) -> Selection:
        """The rows in any of `categories` (empty = all) whose text matches `search`, sorted by `sort`;
        with `quality` (signal names), only those flagged by any of these signals.

        Literal search is case-insensitive and finds the text whatever its Unicode form (NFC or NFD);
        with `regex` the pattern is an RE2 regular expression (Python-like syntax, no backreferences),
        also case-insensitive, where ^ and $ match at the start and end of every line of every field.
        A search whose scan takes longer than QUERY_SECONDS is stopped with a QueryError.
        """
        quality = self.check_quality(quality)
        if quality:
            if self.signals is None:
                raise SignalsNotReady("The quality signals are still being computed: the Quality filter works once "
                                      "they are ready (the Quality line says how far along they are).")
            base = self.select(categories, search, regex, sort)
            key = (base.categories, base.search, base.regex, base.sort, quality)
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
            flagged = np.logical_or.reduce([self.signals.flags[name] for name in quality])
            selection = Selection(base.categories, base.search, base.regex, base.sort, base.rows[flagged[base.rows]],
                                  quality)
            return self._remember(key, selection)
        categories = self.check_categories(categories)
        try:
            found = parse(search, bool(regex))
        except SearchError as err:
            raise QueryError(str(err)) from None
        search = found.text if found else ""
        if sort not in SORTS:
            raise QueryError(f"Unknown sort '{sort}'. Choose one of: {', '.join(SORTS)}.")
        key = (categories, search, bool(regex), sort)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        rows = self._match(categories or tuple(self.categories), found)
        if sort == BEST_MATCH:
            if ranks_by_relevance(found) and self.num_rows > MAX_BEST_MATCH_ROWS:
                raise QueryError(f"“{BEST_MATCH}” ranks datasets of up to {MAX_BEST_MATCH_ROWS:,} rows; this one has "
                                 f"{self.num_rows:,}. Sort by dataset order or a length instead.")
            if ranks_by_relevance(found):
                scores = self.relevance(found)[self._position[rows]]
                rows = rows[np.argsort(-scores, kind="stable")]  # stable: equal scores stay in dataset order
        elif SORTS[sort] is not None:
            field, longest_first = SORTS[sort]
            lengths = self.lengths[field][rows]
            # Stable, so rows of equal length stay in dataset order.
            rows = rows[np.argsort(-lengths if longest_first else lengths, kind="stable")]
        return self._remember(key, Selection(categories, search, bool(regex), sort, rows))

    def _remember(self, key: tuple, selection: Selection) -> Selection:
        with self._lock:
            self._cache[key] = selection
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return selection

    @staticmethod
    def check_quality(quality) -> tuple[str, ...]:
        """`quality` (a list of signal names, one name, or None/empty for no quality filter) as a tuple."""
        if isinstance(quality, str):
            quality = [quality] if quality else []
        if quality is None:
            quality = []
        if not isinstance(quality, (list, tuple)) or not all(isinstance(item, str) for item in quality):
            raise QueryError(f"quality must be a list of signal names (empty = no quality filter), got "
                             f"{type(quality).__name__} {quality!r:.80}.")
        quality = tuple(dict.fromkeys(quality))
        unknown = [name for name in quality if name not in SIGNALS]
        if unknown:
            raise QueryError(f"Unknown signal {', '.join(map(repr, unknown))}. Signals: {', '.join(SIGNALS)}.")
        return quality

    def signal_counts(self, selection: Selection) -> dict[str, int] | None:
        """Rows of `selection` each signal flags (None until the signals are computed)."""
        return None if self.signals is None else self.signals.counts(selection.rows)

    def signals_per_category(self, selection: Selection) -> pd.DataFrame | None:
        """Flagged rows of `selection` per (category, signal), long form (category, signal, rows), zeros
        left out; None until the signals are computed."""
        if self.signals is None:
            return None
        position = self._position[selection.rows]
        out = []
        for category in self.categories:
            start, stop = self._slices[category]
            rows = selection.rows[(position >= start) & (position < stop)]
            for name, count in self.signals.counts(rows).items():
                if count:
                    out.append((category, name, count))
        return pd.DataFrame(out, columns=["category", "signal", "rows"]).astype({"rows": "int64"})

    def relevance(self, search: Search) -> np.ndarray:
        """BM25 score of every row (by position in _table) for the words of a literal `search`; all zero
        when none of its words is in the data. The index is built on first use and kept."""
        with self._bm25_lock:
            if self._bm25 is None:
                haystack = [text for category in self.categories for _, hay in self._pieces[category]
                            for text in hay.to_pylist()]  # position order: pieces run category by category
                retriever = bm25s.BM25()
                retriever.index(_tokens(haystack), show_progress=False)
                self._bm25 = retriever
        words = [w for w in _tokens([search.needle], ids=False)[0] if w in self._bm25.vocab_dict]
        return self._bm25.get_scores(words) if words else np.zeros(self.num_rows, np.float32)

    def check_categories(self, categories) -> tuple[str, ...]:
        """`categories` (a list of names, one name, or None/empty for all) as a tuple of known names."""
        if isinstance(categories, str):
            categories = [categories] if categories else []
        if categories is None:
            categories = []
        if not isinstance(categories, (list, tuple)):
            raise QueryError(f"categories must be a list of category names (empty = all), got "
                             f"{type(categories).__name__} {categories!r:.80}.")
        for item in categories:
            if not isinstance(item, str):
                raise QueryError(f"categories must be a list of category names (text), but it holds "
                                 f"{type(item).__name__} {item!r:.80}.")
        categories = tuple(dict.fromkeys(categories))  # dedupe, keep order
        unknown = [c for c in categories if c not in self.counts]
        if unknown:
            known = ", ".join(self.categories) or "(none: the dataset is empty)"
            raise QueryError(f"Unknown category {', '.join(map(repr, unknown))}. Known categories: {known}.")
        return categories

    def _match(self, categories: tuple[str, ...], search: Search | None) -> np.ndarray:
        if search is None:
            positions = [np.arange(*self._slices[c]) for c in categories]
            return np.sort(self._row_ids[np.concatenate(positions)]) if positions else np.empty(0, np.int64)

        # A regex can match the separator (`\s`, `[^x]`, `\n`, ...) and a literal with a newline or NUL
        # could match a piece of it, so those scan each field on its own. That reads the same
        # bytes as one haystack scan (the field slices are zero-copy); only literals without
        # such characters, nearly all of them, get the faster pre-lowered haystack.
        by_field = search.regex or any(ch in search.needle for ch in set(FIELD_SEPARATOR))
        pattern = search.pattern

        def scan(start: int, hay: pa.Array) -> np.ndarray:
            if by_field:
                mask = None
                for field in TEXT_FIELDS:
                    text = self._table[field].slice(start, len(hay))
                    if search.regex:
                        found = pc.match_substring_regex(text, pattern, ignore_case=True)
                    else:
                        found = pc.match_substring_regex(fold(text.combine_chunks()), pattern)
                    mask = found if mask is None else pc.or_kleene(mask, found)
                mask = pc.fill_null(mask, False)
            else:
                # RE2 (match_substring_regex) finds a literal 3-10x faster than match_substring
                # here, hence literals go through it too, escaped, against the folded text.
                mask = pc.match_substring_regex(hay, pattern)
            return start + np.flatnonzero(mask.to_numpy(zero_copy_only=False))

        pieces = [piece for c in categories for piece in self._pieces[c]]
        chunks = _Chunks(pieces, self._chars_before)
        deadline = time.monotonic() + QUERY_SECONDS

        def work() -> list[np.ndarray]:
            # A literal scan is fast whatever the text (one escaped literal in RE2): whole pieces.
            out, chars = [], _FIRST_CHUNK_CHARS if search.regex else int(self._chars_before[-1]) + 1
            while time.monotonic() < deadline:
                chunk = chunks.take(chars)
                if chunk is None:
                    return out
                began = time.monotonic()
                out.append(scan(*chunk[:2]))
                took = max(time.monotonic() - began, 1e-6)
                chars = max(_FIRST_CHUNK_CHARS // 4, int(max(chunk[2], 1) * min(4.0, _CHUNK_SECONDS / took)))
            return out

        if len(pieces) > 1 or (search.regex and chunks.rows > 1_000):
            parts = [part for worker in [_POOL.submit(work) for _ in range(2)] for part in worker.result()]
        else:  # one piece of a literal scan: a thread hand-off would cost more than it saves
            parts = work()
        if chunks.left:
            done = 1 - chunks.left / max(chunks.rows, 1)
            what = "regular expression" if search.regex else "search"
            raise QueryError(f"The search was stopped after {QUERY_SECONDS:g} s, {done:.0%} of the way through the "
                             f"rows: this {what} is too slow to run over the data. "
                             + ("Make it simpler (fewer or smaller repeats such as {1000} or .*), "
                                if search.regex else "Search for a shorter, distinctive text, ")
                             + "or tick fewer categories.")
        positions = np.concatenate(parts) if parts else np.empty(0, np.int64)
        # Back to dataset order: marking a mask and reading it is O(rows), cheaper than sorting
        # hundreds of thousands of matches.
        hit = np.zeros(self.num_rows, dtype=bool)
        hit[self._row_ids[positions]] = True
        return np.flatnonzero(hit)

    def page(self, selection: Selection, page: int) -> list[dict]:
        """Records of page `page` (from 1) of `selection`, each with its dataset row number as "row"."""
        page = check_page(page, selection.pages)
        rows = selection.rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        return self.records(rows)

    def records(self, rows) -> list[dict]:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise QueryError(f"Row numbers go from 0 to {self.num_rows - 1}.")
        picked = self._table.take(pa.array(self._position[rows])).to_pylist()
        return [{"row": int(row), **record} for row, record in zip(rows, picked)]

    def record(self, row: int) -> dict:
        try:
            row = int(row)
        except (TypeError, ValueError):
            raise QueryError(f"Row must be a whole number, got {row!r}.") from None
        if not 0 <= row < self.num_rows:
            raise QueryError(f"No row {row}: the dataset has rows 0 to {self.num_rows - 1}.")
        return self.records([row])[0]

    def table(self, selection: Selection) -> pa.Table:
        """Every row of `selection`, in its order, in the dataset schema (no row numbers)."""
        return self._table.take(pa.array(self._position[selection.rows]))

    # -- charts ------------------------------------------------------------------------------
    def category_counts(self, selection: Selection) -> pd.DataFrame:
        """Rows per category in `selection`, every category of the dataset listed (zeros included)."""
        position = self._position[selection.rows]
        counts = []
        for category in self.categories:
            start, stop = self._slices[category]
            counts.append(int(np.count_nonzero((position >= start) & (position < stop))))
        return pd.DataFrame({"category": self.categories, "rows": counts})


class _Chunks:
    """Hands out consecutive runs of rows of `pieces` ((start, haystack) pairs) to the scan threads."""

    def __init__(self, pieces: list[tuple[int, pa.Array]], chars_before: np.ndarray):
        self._pieces = pieces
        self._chars_before = chars_before
        self._piece, self._offset = 0, 0
        self.rows = sum(len(hay) for _, hay in pieces)
        self.left = self.rows
        self._lock = threading.Lock()

    def take(self, chars: int) -> tuple[int, pa.Array, int] | None:
        """(first row's position, haystack slice, its characters) of the next rows holding about `chars`
        characters (one row at least, one piece at most), or None when all rows are handed out."""
        with self._lock:
            while self._piece < len(self._pieces) and self._offset >= len(self._pieces[self._piece][1]):
                self._piece, self._offset = self._piece + 1, 0
            if self._piece == len(self._pieces):
                return None
            start, hay = self._pieces[self._piece]
            first = start + self._offset
            stop = int(np.searchsorted(self._chars_before, self._chars_before[first] + chars, side="right")) - 1
            size = min(max(stop - first, 1), len(hay) - self._offset)
            chunk = (first, hay.slice(self._offset, size), int(self._chars_before[first + size] - self._chars_before[first]))
            self._offset += size
            self.left -= size
            return chunk


def ranks_by_relevance(search: Search | None) -> bool:
    """Whether "best match" can rank by relevance: only a literal search has words to rank by."""
    return search is not None and not search.regex


def _tokens(texts: list[str], ids: bool = True):
    # Texts are already folded (lower case, no accents). bm25s' own word pattern and English stopwords.
    return bm25s.tokenize(texts, lower=False, stopwords="en", return_ids=ids, show_progress=False)


def check_page(page, pages: int) -> int:
    """`page` as a page number from 1 to `pages`. A whole number, or text or a float that is exactly
    one ("7", 7.0); anything else (1.5, "abc", True, None) is a QueryError naming the range."""
    try:
        number = whole_number(page)
    except ValueError:
        raise QueryError(f"page must be a whole number from 1 to {pages}, got {page!r:.80}.") from None
    if not 1 <= number <= pages:
        raise QueryError(f"Page {number} is out of range: this selection has page(s) 1 to {pages}.")
    return number
