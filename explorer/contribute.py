"""The Contribute view's logic (no Gradio here): each category's guideline, example records, and the
quality warnings of one record being written, against the loaded dataset.

    reference = Reference(frame)                # once per loaded dataset (load_records' frame)
    warnings(record, reference) -> [Warning]    # citations, duplicate (with the record it repeats),
                                                # language, pii, copied: each naming its field
    examples(frame, "closed_qa") -> [dict]      # two records of that category from the loaded dataset
    GUIDELINES["closed_qa"]                     # what dolly-15k's writers were asked for

Warnings are not errors: the writer keeps the record by giving a reason (dolly.contributions.save's
`overrides`). The hard checks (required fields, lengths, category) are dolly.contributions.check. The
signals are explorer.signals' own patterns and models, run on the one record; duplicate and language
compare it with the loaded dataset (exact duplicates after normalising case, spaces and punctuation; near
duplicates by the same MinHash signatures of instruction + context, compared with every record's).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dolly.contributions import CATEGORIES
from dolly.data import REQUIRED_COLUMNS, TEXT_FIELDS
from explorer import signals as sig

# The databricks-dolly-15k dataset card's description of each category (the guidelines its writers
# followed), written here from the card's text as we know it (the Hub is not reachable from here to
# quote it verbatim). general_qa has no paragraph of its own on the card; its line follows the card's
# list of behaviours.
GUIDELINES = {
    "creative_writing": "Creative Writing: write a question or instruction that calls for a creative, open-ended "
                        "written response. The answer should be reasonable to expect from a person with general "
                        "world knowledge, and should not require searching. Examples: poems, short stories, "
                        "essays, a letter. Do not use reference text (leave the context empty).",
    "closed_qa": "Closed QA: write a question or instruction that requires a factually correct response based on "
                 "a passage of text from Wikipedia. The question can be complex and involve human-level "
                 "reasoning, but should not require special knowledge. Put the reference passage in the context "
                 "and the question in the instruction.",
    "open_qa": "Open QA: write a question that can be answered using general world knowledge or at most a single "
               "search. It asks for opinions and facts about the world at large and gives no reference text "
               "(leave the context empty).",
    "summarization": "Summarization: give a summary of a paragraph from Wikipedia. Don't ask for something that "
                     "would take more than 3–5 minutes to answer. Put the paragraph in the context and the "
                     "instruction (e.g. 'Summarize this paragraph about …') in the instruction.",
    "information_extraction": "Information Extraction: the question involves reading a paragraph from Wikipedia "
                              "and extracting information from it. Everything needed to produce the answer (a "
                              "list, keywords, …) must be in the passage. Put the passage in the context.",
    "classification": "Classification: the prompt contains lists or examples of entities to be classified, e.g. "
                      "movie reviews, products, animals. The text or the list to classify is in the prompt "
                      "itself (there is usually no reference text). Choose any categories to classify into; the "
                      "more diverse the better.",
    "brainstorming": "Brainstorming: think up lots of examples in response to a question asking to brainstorm "
                     "ideas (e.g. 'What are some fun things to do in Paris in winter?'). No reference text.",
    "general_qa": "General QA: ask a question on any topic, answerable from broad knowledge, and answer it in your "
                  "own words, as a knowledgeable person would. No reference text (leave the context empty).",
}
assert set(GUIDELINES) == set(CATEGORIES)

EXPLANATIONS = {
    "citations": "citation markers such as [12] or [citation needed] (Wikipedia footnotes; dolly's card recommends "
                 "removing them)",
    "pii": "personal data",
    "copied": "most of the response is copied from the context, in a category that asks for one's own words",
    "empty": "no letter or digit, or a placeholder such as N/A",
}


@dataclass(frozen=True)
class Warning:
    """A quality signal on the record being written: `field` it is in, `message` for the form, and for a
    duplicate the record it repeats (`duplicate`, with its dataset `row`)."""

    signal: str
    field: str
    message: str
    duplicate: dict = field(default_factory=dict)
    row: int | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Reference:
    """The loaded dataset as one record is compared with it; indexes are built on first use, once."""

    def __init__(self, frame: pd.DataFrame, main_language: str | None = None):
        self.frame = frame.reset_index(drop=True)
        self._main = main_language
        self._lock = threading.Lock()
        self._exact: dict | None = None
        self._signatures = self._eligible = None
        self._permutations = None

    def main_language(self) -> str:
        """The dataset's most common language (of up to 2,000 records spread over it)."""
        with self._lock:
            if self._main is None:
                n = len(self.frame)
                rows = np.unique(np.linspace(0, n - 1, min(n, 2000)).astype(int)) if n else np.empty(0, int)
                cols = {c: sig._strings(self.frame[c].iloc[rows]) for c in TEXT_FIELDS}
                _, self._main, _ = sig._language(cols, lambda *a, **k: None)
            return self._main

    def _build(self) -> None:
        from datasketch import MinHash

        with self._lock:
            if self._exact is not None:
                return
            cols = {c: sig._strings(self.frame[c]) for c in TEXT_FIELDS}
            whole, prompt = _keys(cols)
            exact: dict = {}
            for row, value in enumerate(whole.to_pylist()):
                exact.setdefault(value, row)
            self._permutations = MinHash(num_perm=sig.NUM_PERM, seed=1, scheme="affine32").permutations
            self._eligible = np.asarray(pc.greater_equal(pc.utf8_length(prompt), sig.NEAR_MIN_CHARS))
            self._signatures = _signatures(prompt, self._permutations)
            self._prompts = prompt
            self._exact = exact

    def duplicate_of(self, record: dict) -> tuple[int, str] | None:
        """(row, "exact" or "near") of the first dataset record this one repeats, or None."""
        self._build()
        cols = {c: pa.array([str(record.get(c) or "")], pa.large_string()) for c in TEXT_FIELDS}
        whole, prompt = _keys(cols)
        row = self._exact.get(whole[0].as_py())
        if row is not None:
            return row, "exact"
        if len(prompt[0].as_py()) < sig.NEAR_MIN_CHARS or not len(self.frame):
            return None
        mine = _signatures(prompt, self._permutations)[0]
        same_prompt = np.asarray(pc.equal(self._prompts, prompt[0])) & self._eligible
        agree = (self._signatures == mine).mean(axis=1)
        near = np.flatnonzero(((agree >= sig.NEAR_THRESHOLD) & self._eligible) | same_prompt)
        return (int(near[0]), "near") if len(near) else None


def _keys(cols) -> tuple[pa.Array, pa.Array]:
    """The duplicate signal's two texts: the whole record normalised, and instruction + context's start."""
    norm = {c: sig._normalised(cols[c]) for c in TEXT_FIELDS}
    whole = pc.binary_join_element_wise(*(norm[c] for c in TEXT_FIELDS), sig._SEP)
    prompt = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(pc.binary_join_element_wise(
        norm["instruction"], norm["context"], sig._SPACE)), 0, sig.NEAR_CHARS)
    return whole, prompt


def _signatures(prompt: pa.Array, permutations) -> np.ndarray:
    out = np.zeros((len(prompt), sig.NUM_PERM), np.uint32)
    for start, stop in sig._chunks(len(prompt), 50_000):
        data, offsets = sig._buffers(prompt.slice(start, stop - start))
        hashes, starts = sig.shingle_hashes(data, offsets)
        out[start:stop] = sig.minhash_signatures(hashes, starts, permutations)
    return out


def warnings(record: dict, reference: Reference | None = None) -> list[Warning]:
    """The quality warnings of `record` (instruction, context, response, category); with `reference` (the
    loaded dataset) also duplicate and language. Empty fields are the checks' business, not warned of."""
    record = {c: str(record.get(c) or "") for c in REQUIRED_COLUMNS}
    if not any(record[c].strip() for c in TEXT_FIELDS):
        return []
    one = pd.DataFrame({c: [record[c]] for c in REQUIRED_COLUMNS})
    found = sig.compute(one)
    out = []
    for name in ("citations", "pii", "copied"):
        if not found.flags[name][0]:
            continue
        spans = found.spans_of(0, name)
        fields = list(dict.fromkeys(s.field for s in spans)) or ["response"]
        for field_name in fields:
            texts = [record[field_name][s.start:s.end] for s in spans if s.field == field_name]
            shown = ", ".join(dict.fromkeys(texts[:5]))
            detail = f" ({'; '.join(dict.fromkeys(s.label for s in spans if s.field == field_name and s.label))})" \
                if name == "pii" else ""
            out.append(Warning(name, field_name, f"{EXPLANATIONS[name]}{detail}" + (f": {shown}" if shown else "")))
    if reference is not None:
        duplicate = reference.duplicate_of(record)
        if duplicate is not None:
            row, how = duplicate
            twin = {c: str(reference.frame[c].iloc[row]) for c in REQUIRED_COLUMNS}
            out.append(Warning("duplicate", "instruction",
                               f"{'the same record as' if how == 'exact' else 'nearly the same instruction and context as'}"
                               f" row {row} of the loaded dataset ({twin['category']}): "
                               f"“{twin['instruction'][:200]}”", twin, row))
        language = _language(record, reference.main_language())
        if language:
            out.append(Warning("language", "instruction",
                               f"written in another language ({language}) than the dataset's ({reference.main_language()})"))
    return out


def _language(record: dict, main: str) -> str:
    """The record's language when it is not `main` by the language signal's rule, else ""."""
    if not main:
        return ""
    text = " ".join(record[c] for c in ("instruction", "response", "context"))
    text = " ".join(text[: sig.LANGUAGE_CHARS].split())
    if sum(ch.isalpha() for ch in text) < sig.LANGUAGE_MIN_LETTERS:
        return ""
    model = sig.language_model().f
    scores = {label[9:]: p for p, label in model.predict(text + "\n", 5, 0.0, "replace")}
    best = max(scores, key=scores.get) if scores else ""
    return best if best != main and scores.get(main, 0.0) < sig.LANGUAGE_MAIN_MAX_PROB else ""


def examples(frame: pd.DataFrame, category: str, n: int = 2) -> list[dict]:
    """`n` records of `category` from the loaded dataset, spread over it (the same ones each time): ones with
    a response, and for categories with a passage, ones that have it."""
    if frame is None or not len(frame) or "category" not in frame.columns:
        return []
    rows = frame[(frame["category"] == category) & (frame["response"].fillna("").str.strip() != "")]
    if category in sig.NEEDS_CONTEXT:
        rows = rows[rows["context"].fillna("").str.strip() != ""]
    if not len(rows):
        return []
    picks = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int))
    return [{c: str(rows[c].iloc[i] or "") for c in REQUIRED_COLUMNS} for i in picks]
