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

from dolly.contributions import CATEGORIES, DEFAULT_LICENSE
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


# -- what the Contribute tab shows and does (plain functions; explorer/contribute_tab.py draws them) ----------
def new_draft(category: str = "") -> dict:
    """An empty draft with its own key: the idempotency key of its save (made once per draft)."""
    import uuid

    return {"key": str(uuid.uuid4()), "category": category, "instruction": "", "context": "", "response": "",
            "license": DEFAULT_LICENSE, "reason": ""}


def reference_of(loader) -> Reference | None:
    """The loaded dataset's Reference (built once per loaded Index), or None while it loads or failed."""
    try:
        index = loader.get()
    except Exception:  # noqa: BLE001 - not loaded (yet): warnings without duplicate and language
        return None
    with _REFERENCE_LOCK:
        reference = getattr(index, "_contribute_reference", None)
        if reference is None:
            signals = getattr(index, "signals", None)
            main = getattr(signals, "main_language", None) if signals is not None and not callable(signals) else None
            reference = index._contribute_reference = Reference(index.frame(), main)
        return reference


_REFERENCE_LOCK = threading.Lock()


def guideline_md(category: str, frame: pd.DataFrame | None) -> str:
    """The category's guideline and two example records of the loaded dataset, as Markdown."""
    if category not in GUIDELINES:
        return "Choose a category to see its guideline and two example records."
    text = f"**{GUIDELINES[category]}**"
    shown = examples(frame, category) if frame is not None else []
    for i, record in enumerate(shown, 1):
        context = f"\n\n> *Context:* {_quote(record['context'], 400)}" if record["context"].strip() else ""
        text += (f"\n\n**Example {i}.** *Instruction:* {_quote(record['instruction'], 300)}{context}\n\n"
                 f"> *Response:* {_quote(record['response'], 400)}")
    if frame is not None and not shown:
        text += "\n\n*(The loaded dataset has no record of this category to show.)*"
    return text


def _quote(text: str, limit: int) -> str:
    import html

    text = " ".join(str(text).split())
    return html.escape(text[:limit] + ("…" if len(text) > limit else ""))


def record_of(draft: dict) -> dict:
    return {name: str(draft.get(name) or "") for name in REQUIRED_COLUMNS}


def feedback_md(draft: dict, reference: Reference | None, *, question: bool = False,
                live_warnings: bool = True) -> tuple[str, list[Warning]]:
    """What the form says before saving: each problem naming its field, then the warnings (overridable)."""
    import html

    from dolly.contributions import check

    record = record_of(draft)
    if not any(record[name].strip() for name in TEXT_FIELDS):
        return "", []  # an empty form: nothing to say yet
    problems = check(record, question=question)
    found = warnings(record, reference) if live_warnings else []
    lines = [f"- ⛔ **{p.field}**: {html.escape(p.message)}" for p in problems]
    lines += [f"- ⚠️ **{w.field}** ({w.signal}): {html.escape(w.message)}" for w in found]
    if found:
        lines.append("\nWarnings do not stop a save: fix the record, or say in *Reason to keep it* why it is right.")
    return "\n".join(lines), found


def save_draft(store, draft: dict, author: str, reference: Reference | None, *, question: bool = False):
    """Save the draft (a question when `question`): returns (message, saved or None). Refuses with every
    problem naming its field; with warnings and no reason, says them and asks for one."""
    from dolly.contributions import ContributionError, Invalid, check, save

    record = record_of(draft)
    if question:
        record["response"] = ""
    problems = check(record, question=question)
    if problems:
        return "**Not saved.** " + " ".join(f"**{p.field}**: {p.message}." for p in problems), None
    found = warnings(record, reference)
    reason = str(draft.get("reason") or "").strip()
    if found and not reason:
        return ("**Not saved yet:** " + " ".join(f"**{w.field}** ({w.signal}): {w.message}." for w in found)
                + " Fix it, or give a *Reason to keep it* and save again."), None
    try:
        saved = save(store, record, key=str(draft.get("key") or ""), author=author,
                     overrides={w.signal: reason for w in found}, license=str(draft.get("license") or DEFAULT_LICENSE))
    except Invalid as error:
        return "**Not saved.** " + " ".join(f"**{p.field}**: {p.message}." for p in error.problems), None
    except ContributionError as error:
        return f"**Not saved.** {error}", None
    c = saved.contribution
    what = "question" if c.is_question else "record"
    if not saved.new:
        return f"This draft was already saved as {what} #{c.id} ({c.category}); nothing was added.", saved
    return f"**Saved** as {what} #{c.id} ({c.category}) by {c.author}. Thank you! A new draft is open.", saved


def save_answer_md(store, question_id, response: str, key: str, author: str, reference: Reference | None,
                   reason: str = "", license: str = DEFAULT_LICENSE):
    """Answer a question: (message, saved or None)."""
    from dolly.contributions import ContributionError, Invalid, get, save_answer

    if question_id in (None, ""):
        return "**Not saved.** Show a question first.", None
    question = get(store, int(question_id))
    if question is None:
        return f"**Not saved.** Question #{question_id} does not exist.", None
    found = warnings({**question.record(), "response": response or ""}, reference)
    found = [w for w in found if w.signal != "duplicate"]  # the question itself may repeat; the answer is new
    if found and not (reason or "").strip():
        return ("**Not saved yet:** " + " ".join(f"**{w.field}** ({w.signal}): {w.message}." for w in found)
                + " Fix it, or give a *Reason to keep it* and save again."), None
    try:
        saved = save_answer(store, int(question_id), response or "", key=key, author=author,
                            overrides={w.signal: reason for w in found}, license=license)
    except Invalid as error:
        return "**Not saved.** " + " ".join(f"**{p.field}**: {p.message}." for p in error.problems), None
    except ContributionError as error:
        return f"**Not saved.** {error}", None
    c = saved.contribution
    if not saved.new:
        return f"This answer was already saved as record #{c.id}; nothing was added.", saved
    return f"**Saved** your answer to question #{question_id} as record #{c.id}. Thank you!", saved


def question_md(question) -> str:
    if question is None:
        return "No open question from someone else right now: write one yourself with *Save as a question*."
    context = f"\n\n> *Context:* {_quote(question.context, 2000)}" if question.context.strip() else ""
    return (f"**Question #{question.id}** ({question.category}, by {_quote(question.author, 60)}): "
            f"{_quote(question.instruction, 2000)}{context}")


def leaderboard_md(standings) -> str:
    """The leaderboard as a Markdown table: per person, records written / accepted / questions, and per category."""
    if not standings:
        return "No contributions yet: be the first."
    people: dict = {}
    for s in standings:
        p = people.setdefault(s.author, {"written": 0, "accepted": 0, "questions": 0, "by": {}})
        p["written"] += s.written
        p["accepted"] += s.accepted
        p["questions"] += s.questions
        if s.written:
            p["by"][s.category] = p["by"].get(s.category, 0) + s.written
    rows = sorted(people.items(), key=lambda kv: (-kv[1]["written"], -kv[1]["accepted"], kv[0]))
    lines = ["| # | Writer | Written | Accepted | Questions | Per category |", "|---|---|---|---|---|---|"]
    for rank, (author, p) in enumerate(rows, 1):
        by = ", ".join(f"{c} {n}" for c, n in sorted(p["by"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {rank} | {_quote(author, 60)} | {p['written']} | {p['accepted']} | {p['questions']} | {by} |")
    return "\n".join(lines)
