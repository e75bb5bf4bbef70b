"""The Explorer's search text rules, in one place: what a search may be, how text is normalised for a
literal search, and where a search matches inside a text (for highlighting).

- `parse` turns what the user typed (search box, deep link, /explore, /export) into a `Search`, or
  a `SearchError` that names what was wrong: not text, a lone surrogate, longer than
  MAX_SEARCH_CHARS, a regular expression that does not compile.
- Every regular expression runs on RE2, a linear-time engine: pyarrow's (selecting rows) and the
  `google-re2` package's (finding match spans to highlight), both built on the same library. No
  pattern a user typed ever reaches Python's backtracking `re`: `(.*a){40}` froze the whole server
  for minutes when highlighting went through it.
- `fold` is THE normalisation of a literal search: accents off (NFD, non-spacing marks removed, NFC:
  "é" and "e" + U+0301 are both "e", as in the Hugging Face Dataset Viewer's full-text search, so
  "Zurich" finds "Zürich" and "zürich" finds "Zurich"), then one case fold. It is applied to the
  indexed text and to the query alike, so text a user typed that is verbatim in a record is always
  found (Python's `str.lower` and Arrow's `utf8_lower` disagree on "İ" and the final sigma: only one
  of them is used). A regular expression runs on the text as it is: no folding.
- Highlighting a literal folds the text in "clusters" (a character with the marks that combine with
  it) and maps matches back to those clusters, so a match is marked in the record's own spelling.
"""
from __future__ import annotations

import functools
import time
import unicodedata
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import re2

from dolly.text import text_problem

# Longest search accepted: far above any real query, far below what makes RE2 give up
# ("pattern too large") or a scan of every row crawl.
MAX_SEARCH_CHARS = 2000
# Highlighting one screen (a page of cells and the opened record) stops marking after this long and
# shows the rest unmarked: a slow pattern (RE2 is linear, but `.{1000}.{1000}x` costs ~30 µs a
# character) must not hold a request for long.
HIGHLIGHT_SECONDS = 2.0


class SearchError(ValueError):
    """A search that cannot be run, with a message that says why and what to do."""


# -- the one normalisation ------------------------------------------------------------------------
# Code points that can combine, decompose or case-fold: up to plane 2 (beyond it only CJK ideographs,
# private use and tags, which do none of it), less the surrogates. Scanning 200k, not 1.1M, at start.
_POINTS = [*range(0xD800), *range(0xE000, 0x30000)]


@functools.cache
def _tables() -> tuple[frozenset[str], str, tuple[tuple[str, str], ...], frozenset[str], str]:
    """What `fold` needs beyond Arrow's lower case, from Python's Unicode database:

    - `joins`: characters that NFC may join to the character before them (combining marks, the
      second character of a composition, Hangul vowel and final jamo);
    - `folds`: (lower-case character, its case fold) where lower case is not yet the case fold
      ("ς" is "σ", "ß" is "ss", the micro sign is "μ", ...), so "σίσυφος" finds "ΣΊΣΥΦΟΣ";
    - `rare`: an RE2 class of the characters whose presence means a text needs more than utf8_lower
      (it may not be NFC, it holds an accent to take off, or it holds a character of `folds` after
      lowering). Only rows holding one pay for utf8_normalize (about 20x the cost of lowering), the
      accent stripping and the folds; a text without any is NFC and accent-free as it is;
    - `folding`: an RE2 class of the characters of `folds`: only texts holding one are folded further.
    """
    joins, rare, candidates = set(), set(), {}
    for point in _POINTS:
        char = chr(point)
        if unicodedata.combining(char):
            joins.add(char)
        if unicodedata.category(char) == "Mn" or any(
                unicodedata.category(part) == "Mn" for part in unicodedata.normalize("NFD", char)):
            rare.add(char)  # a non-spacing mark, or a letter that carries one ("é", "ü", "Å"): accents off
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if unicodedata.normalize("NFC", char) != char:  # singletons, exclusions: NFC replaces them
                rare.add(char)
            if len(parts) == 2:  # the second of a pair composes with what stands before it
                joins.add(chr(int(parts[1], 16)))
        if char.casefold() != char.lower():
            candidates[char] = char.casefold()
    # Hangul: a vowel or a final consonant jamo composes with what stands before it (algorithmically,
    # so not in the decomposition table).
    joins.update(chr(p) for p in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)])
    # The folds apply to Arrow's lower case, which is not always Python's: ask Arrow which characters
    # its lower case leaves as they are, and which characters it lowers into one of them.
    keys = list(candidates)
    lowered = pc.utf8_lower(pa.array(keys, pa.string())).to_pylist()
    folds = {key: candidates[key] for key, low in zip(keys, lowered) if low == key}
    uppers = [chr(p) for p in _POINTS if not folds.keys().isdisjoint(chr(p).lower())]
    rare.update(folds)
    rare.update(c for c, low in zip(uppers, pc.utf8_lower(pa.array(uppers, pa.string())).to_pylist())
                if not folds.keys().isdisjoint(low))
    rare |= joins
    return frozenset(joins), _re2_class(rare), tuple(sorted(folds.items())), frozenset(rare), _re2_class(folds)


def _re2_class(chars) -> str:
    ranges, points = [], sorted(ord(c) for c in chars)
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"


def fold(texts: pa.Array) -> pa.Array:
    """THE normalisation of text for a literal search: accents off (NFD, every non-spacing mark
    removed, NFC), then the case fold (Arrow's lower case, then Unicode's case folding where they
    differ). Applied to the indexed text and to the query alike, so the two always agree. `texts`:
    an Arrow string array (nulls stay null)."""
    _, rare, folds, _, folding = _tables()
    lowered = pc.utf8_lower(texts)
    needs = pc.fill_null(pc.match_substring_regex(texts, rare), False)
    if not pc.any(needs).as_py():
        return lowered
    bare = pc.replace_substring_regex(pc.utf8_normalize(pc.array_filter(texts, needs), "NFD"), r"\p{Mn}+", "")
    picked = pc.utf8_lower(pc.utf8_normalize(bare, "NFC"))
    more = pc.match_substring_regex(picked, folding)  # one scan; then only texts with a fold ("ß", "ς") are scanned per fold
    if pc.any(more).as_py():
        rest = pc.array_filter(picked, more)
        for char, folded in folds:
            if pc.any(pc.match_substring(rest, char)).as_py():
                rest = pc.replace_substring(rest, char, folded)
        picked = pc.replace_with_mask(picked, more, rest)
    return pc.replace_with_mask(lowered, needs, picked.cast(lowered.type))


def fold_text(text: str) -> str:
    """`fold` of one string."""
    texts = pa.array([text], pa.string())
    # The same result as fold() without compiling its class of rare characters for one string.
    return (pc.utf8_lower(texts) if _tables()[3].isdisjoint(text) else fold(texts))[0].as_py()


def _clusters(text: str) -> list[str]:
    """`text` cut before every character that does not join the one before it, so that folding the
    pieces one by one gives the same text as folding it whole."""
    joins = _tables()[0]
    if joins.isdisjoint(text):
        return list(text)
    pieces: list[str] = []
    for char in text:
        if pieces and char in joins:
            pieces[-1] += char
        else:
            pieces.append(char)
    return pieces


def folded_with_origin(text: str) -> tuple[str, list[int], list[int]]:
    """`fold` of `text`, with, for each of its characters, the span of `text` it comes from."""
    pieces = _clusters(text)
    if not pieces:
        return "", [], []
    texts = pa.array(pieces, pa.string())
    folded = (pc.utf8_lower(texts) if _tables()[3].isdisjoint(text) else fold(texts)).to_pylist()
    starts, ends, position = [], [], 0
    for piece, out in zip(pieces, folded):
        starts += [position] * len(out)
        position += len(piece)
        ends += [position] * len(out)
    return "".join(folded), starts, ends


# -- what a search may be -------------------------------------------------------------------------
def _re2_options() -> re2.Options:
    # As pyarrow's match_substring_regex(ignore_case=True) runs it; no captures: only whole-match
    # spans are wanted, and without groups RE2 finds them with its DFA alone.
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False  # a bad pattern is the user's message, not a line on the server's stderr
    return options


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str):
    return re2.compile(pattern, _re2_options())


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def re2_escape(text: str) -> str:
    """`text` as an RE2 pattern that matches exactly it."""
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in text)


@dataclass(frozen=True)
class Search:
    """A checked, non-empty search. `needle`: for a literal, the folded text to look for in folded
    text; for a regex, the pattern (run case-insensitively, ^ and $ at every line)."""

    text: str
    regex: bool
    needle: str

    @property
    def pattern(self) -> str:
        """The RE2 pattern pyarrow's `match_substring_regex` runs: on the original fields (regex, with
        ignore_case=True) or on folded text (literal)."""
        return "(?m)" + self.needle if self.regex else re2_escape(self.needle)

    def spans(self, text: str, deadline: float | None = None) -> list[tuple[int, int]]:
        """(start, end) character offsets of the non-empty matches in `text`, in order, without overlaps;
        none once `deadline` (time.monotonic()) has passed."""
        if not text or (deadline is not None and time.monotonic() > deadline):
            return []
        if self.regex:
            found = []
            for match in _compiled(self.pattern).finditer(text):
                if match.end() > match.start():
                    found.append(match.span())
                if deadline is not None and time.monotonic() > deadline:
                    break
            return found
        folded, starts, ends = folded_with_origin(text)
        found, at = [], folded.find(self.needle)
        while at != -1:
            span = (starts[at], ends[at + len(self.needle) - 1])
            if found and span[0] < found[-1][1]:  # two matches in one cluster: one mark
                found[-1] = (found[-1][0], max(found[-1][1], span[1]))
            else:
                found.append(span)
            at = folded.find(self.needle, at + len(self.needle))
        return found


def parse(search, regex: bool = False) -> Search | None:
    """What the user typed as a `Search` (None for an empty search), or a SearchError saying what was
    wrong: not text, not valid Unicode, too long, or (with `regex`) not a pattern RE2 compiles."""
    if search is None or search == "":
        return None
    if not isinstance(search, str):
        raise SearchError(f"search must be text, got {type(search).__name__} {search!r:.80}.")
    return _parse(search, bool(regex))


@functools.lru_cache(maxsize=256)  # paging through a selection asks again for the same search
def _parse(search: str, regex: bool) -> Search:
    if len(search) > MAX_SEARCH_CHARS:
        raise SearchError(f"search is {len(search):,} characters long; the limit is {MAX_SEARCH_CHARS:,}. "
                          "Search for a shorter, distinctive part of the text.")
    problem = text_problem(search)
    if problem:
        raise SearchError(f"search is not valid text: {problem}. Send the search as valid Unicode text.")
    if not regex:
        return Search(search, False, fold_text(search))
    try:
        _compiled("(?m)" + search)
        # pyarrow bundles its own RE2 build: it must accept the pattern too.
        pc.match_substring_regex(pa.array([""], pa.string()), "(?m)" + search, ignore_case=True)
    except re2.error as err:
        reason = err.args[0].decode("utf-8", "replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        raise SearchError(f"Invalid regular expression {search!r}: {reason}. "
                          "Untick 'Regex' to search for the text as typed.") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        reason = str(err).split(":", 1)[-1].strip()
        raise SearchError(f"Invalid regular expression {search!r}: {reason}. "
                          "Untick 'Regex' to search for the text as typed.") from None
    return Search(search, True, search)


def parse_or_none(search, regex: bool = False) -> Search | None:
    """`parse`, or None for a search that cannot run (the screen shows text unmarked; the summary line
    says what is wrong with the search)."""
    try:
        return parse(search, regex)
    except SearchError:
        return None
