"""Contributions: records people write (and answers they rate and correct), kept in the curation store.

Dolly's dataset was written by people: a record in one of eight categories, a leaderboard, and a second
phase where people answered questions others had written. This module keeps that loop in the SAME
database as the curation decisions (dolly/curation.py): the same `Store`, its connection pool and its one
locking rule (writes go through `Store.writing()`), so one backup, one history, one export path.

    store = open_store(None)                              # dolly.curation.open_store
    problems = check(record)                              # [Problem(field, message)], [] when fine
    saved = save(store, record, key=draft_uuid, author="ann", source="written",
                 overrides={"pii": "the address is the museum's"}, license="cc-by-sa-3.0")
    saved.contribution, saved.new                         # new False: that draft was saved before (one record)
    question = save(store, {"instruction": ..., "category": ...}, key=..., author="ann")   # no response: open
    open_questions(store, exclude_author="bob")           # others' questions nobody answered yet
    save_answer(store, question.contribution.id, "the answer", key=..., author="bob")
    review(store, contribution_id, "rejected", reviewer="cy", reason="copied")  # "accepted", or "" (not reviewed)
    to_review(store); review_log(store, contribution_id)  # the queue; the decisions with their reasons
    leaderboard(store)                                    # [Standing(author, category, written, questions, accepted)]
    contributions(store) -> [Contribution]; records(store) -> DataFrame in the dolly schema
    save_rating(store, key=..., reply_id=..., rating="down", model_id=..., settings={...}, prompt=...,
                original=..., corrected="a better answer", category="open_qa", author="ann")
    preference_pairs(store) -> DataFrame(prompt, chosen, rejected)   # TRL DPOTrainer's columns

Idempotency: every save carries `key`, a UUID the page makes once per draft (or per rating). The key is
unique in the database: a double-click on Save or a retried request stores ONE record and the repeat gets
that record back (`Saved.new` False). The page makes a new key after a confirmed save.

Durability: a save returns after its transaction committed (the store's rule: SQLite WAL with
synchronous=FULL, PostgreSQL synchronous_commit=on): a kill -9 after a confirmed save loses nothing.

Text is stored as typed: `### End`, `### Instruction:` and the other prompt markers in a record are text;
the prompt contract (dolly/prompt.py) splits special tokens from text, so they never become markers in
training.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from dolly.curation import ANONYMOUS, CurationError, Store
from dolly.data import DOLLY_CATEGORIES, REQUIRED_COLUMNS, TEXT_FIELDS
from dolly.prompt import format_prompt
from dolly.text import text_problem

CATEGORIES = DOLLY_CATEGORIES
# The same rule as explorer.signals' context_mismatch (a test keeps them equal): dolly-15k's guidelines
# give a reference passage for these...
NEEDS_CONTEXT = ("closed_qa", "information_extraction", "summarization")
# ...and none for these. classification and creative_writing are free: some of their records quote a text.
NO_CONTEXT = ("open_qa", "general_qa", "brainstorming", "creative_writing")
MIN_CHARS = {"instruction": 10, "context": 20, "response": 2}  # non-space characters; context only where required
MAX_BYTES = 40_000  # per field, UTF-8 bytes (a record of dolly-15k is at most ~26 kB in all)
SOURCES = ("written", "answer", "correction")
# Licenses a writer may choose (Hub license ids). dolly-15k's own is CC BY-SA 3.0.
LICENSES = ("cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-4.0", "cc0-1.0", "apache-2.0", "mit")
DEFAULT_LICENSE = "cc-by-sa-3.0"
REVIEWS = ("", "accepted", "rejected")
RATINGS = {"up": 1, "down": -1, 1: 1, -1: -1, "👍": 1, "👎": -1}
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{7,99}$")


class ContributionError(CurationError):
    """A contribution that cannot be saved, with a message for the writer."""


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field of a record: shown in the form beside that field."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Invalid(ContributionError):
    """The record breaks the checks; `problems` name each field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("Not saved: " + " ".join(f"{p}" for p in problems))

    def __reduce__(self):
        return Invalid, (self.problems,)


class AlreadyAnswered(ContributionError):
    """The question got its answer from someone else first."""


@dataclass(frozen=True)
class Contribution:
    id: int
    key: str
    instruction: str
    context: str
    response: str
    category: str
    author: str
    created_at: str  # ISO 8601, UTC
    source: str
    overrides: dict = field(default_factory=dict)  # signal -> the writer's reason for keeping the record
    license: str = DEFAULT_LICENSE
    answers: int | None = None  # the question (a contribution id) this record answers
    review: str = ""
    reviewed_by: str = ""

    @property
    def is_question(self) -> bool:
        return not self.response.strip()

    def record(self) -> dict:
        return {name: getattr(self, name) for name in REQUIRED_COLUMNS}


@dataclass(frozen=True)
class Saved:
    contribution: Contribution
    new: bool  # False: this key was saved before; nothing was added


@dataclass(frozen=True)
class Standing:
    author: str
    category: str
    written: int  # records with a response (written, answers, corrections)
    questions: int  # instructions left for others to answer
    accepted: int  # of the written ones, accepted by a reviewer


@dataclass(frozen=True)
class Rating:
    id: int
    key: str
    reply_id: str
    rating: int  # 1 (👍) or -1 (👎)
    reason: str
    model_id: str
    settings: dict
    prompt: str  # the user's message (the instruction)
    context: str
    original: str  # the model's reply as it was shown
    corrected: str  # the user's better answer, "" when none
    contribution_id: int | None  # the record the correction became
    author: str
    created_at: str


# -- checks --------------------------------------------------------------------------------------------
def check(record: dict, *, question: bool = False) -> list[Problem]:
    """Every problem of `record` (instruction, context, response, category), each naming its field.
    `question`: the response is left for someone else to write (it must then be empty)."""
    problems = []
    if not isinstance(record, dict):
        return [Problem("record", f"a record is a dict of {', '.join(REQUIRED_COLUMNS)}, got {type(record).__name__}")]
    unknown = [name for name in record if name not in REQUIRED_COLUMNS]
    for name in unknown:
        problems.append(Problem(str(name)[:40], f"is not a field of a record ({', '.join(REQUIRED_COLUMNS)})"))
    values = {}
    for name in REQUIRED_COLUMNS:
        value = record.get(name)
        value = "" if value is None else value
        if not isinstance(value, str):
            problems.append(Problem(name, f"must be text, got {type(value).__name__}"))
            value = ""
        elif problem := text_problem(value):
            problems.append(Problem(name, f"is not valid text: {problem}"))
            value = ""
        elif len(value.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            problems.append(Problem(name, f"is {len(value.encode('utf-8', 'surrogatepass')):,} bytes; at most "
                                          f"{MAX_BYTES:,} bytes (40 kB) per field"))
        values[name] = value
    category = values["category"].strip()
    if not category:
        problems.append(Problem("category", f"choose one of {', '.join(CATEGORIES)}"))
    elif category not in CATEGORIES:
        problems.append(Problem("category", f"'{category[:40]}' is not a category; choose one of {', '.join(CATEGORIES)}"))
    length = {name: len("".join(values[name].split())) for name in TEXT_FIELDS}
    if length["instruction"] < MIN_CHARS["instruction"]:
        problems.append(Problem("instruction", f"write at least {MIN_CHARS['instruction']} characters (not counting "
                                               f"spaces); it has {length['instruction']}"))
    if category in NEEDS_CONTEXT and length["context"] < MIN_CHARS["context"]:
        problems.append(Problem("context", f"{category} needs the reference passage (e.g. from Wikipedia) in the "
                                           f"context, at least {MIN_CHARS['context']} characters"))
    if category in NO_CONTEXT and length["context"]:
        problems.append(Problem("context", f"{category} has no context: leave it empty (put everything the question "
                                           "needs in the instruction)"))
    if question:
        if length["response"]:
            problems.append(Problem("response", "a question for others to answer has no response yet"))
    elif length["response"] < MIN_CHARS["response"]:
        problems.append(Problem("response", f"write the response, at least {MIN_CHARS['response']} characters (or "
                                            "save the instruction as a question for someone else to answer)"))
    first = {}
    for problem in problems:  # one problem per field: the first says what to fix first
        first.setdefault(problem.field, problem)
    return list(first.values())


def _clean(record: dict) -> dict:
    return {name: (record.get(name) or "") for name in REQUIRED_COLUMNS} | {"category": (record.get("category") or "").strip()}


def _check_key(key) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ContributionError(f"key: a save needs the draft's key (a UUID the page makes once per draft), got {key!r:.60}.")
    return key


def _check_overrides(overrides) -> dict:
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ContributionError("overrides: give {warning: reason} for each warning kept.")
    out = {}
    for name, reason in overrides.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ContributionError(f"overrides: say why the record is kept despite the '{name}' warning (a reason is required).")
        if len(reason.encode()) > 2000:
            raise ContributionError(f"overrides: the reason for '{name}' is longer than 2,000 bytes.")
        out[str(name)] = reason.strip()
    return out


def _check_license(license) -> str:
    license = (license or DEFAULT_LICENSE).strip().lower()
    if license not in LICENSES:
        raise ContributionError(f"license: '{license[:40]}' is not offered; choose one of {', '.join(LICENSES)}.")
    return license


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _author(author) -> str:
    return (author or "").strip()[:200] or ANONYMOUS


# -- tables --------------------------------------------------------------------------------------------
def _tables(store: Store) -> None:
    """The contribution tables, created once per store object (CREATE ... IF NOT EXISTS: any process may)."""
    if getattr(store, "_contribution_tables", False):
        return
    for attempt in range(3):
        try:
            with store.writing() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS contributions ({store.id_column}, "
                            "draft_key TEXT NOT NULL UNIQUE, instruction TEXT NOT NULL, context TEXT NOT NULL, "
                            "response TEXT NOT NULL, category TEXT NOT NULL, author TEXT NOT NULL, "
                            "created_at TEXT NOT NULL, source TEXT NOT NULL, overrides TEXT NOT NULL, "
                            "license TEXT NOT NULL, answers BIGINT UNIQUE, review TEXT NOT NULL DEFAULT '', "
                            "reviewed_by TEXT NOT NULL DEFAULT '', reviewed_at TEXT NOT NULL DEFAULT '')")
                cur.execute(f"CREATE TABLE IF NOT EXISTS ratings ({store.id_column}, draft_key TEXT NOT NULL UNIQUE, "
                            "reply_id TEXT NOT NULL, rating INTEGER NOT NULL, reason TEXT NOT NULL, "
                            "model_id TEXT NOT NULL, settings TEXT NOT NULL, prompt TEXT NOT NULL, "
                            "context TEXT NOT NULL, original TEXT NOT NULL, corrected TEXT NOT NULL, "
                            "contribution_id BIGINT, author TEXT NOT NULL, created_at TEXT NOT NULL)")
                # Every review decision with its reason (a rejection says why): its own table, so a store made
                # before reviews had reasons needs no migration.
                cur.execute(f"CREATE TABLE IF NOT EXISTS contribution_reviews ({store.id_column}, "
                            "contribution_id BIGINT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, "
                            "reviewer TEXT NOT NULL, reviewed_at TEXT NOT NULL)")
            break
        except CurationError:
            raise
        except Exception:  # noqa: BLE001 - PostgreSQL: replicas creating the tables at once race; the loser retries
            if attempt == 2:
                raise
    store._contribution_tables = True


_COLUMNS = ("id, draft_key, instruction, context, response, category, author, created_at, source, overrides, "
            "license, answers, review, reviewed_by")


def _contribution(row) -> Contribution:
    (id_, key, instruction, context, response, category, author, at, source, overrides, license, answers,
     review_, reviewed_by) = row
    return Contribution(int(id_), key, instruction, context, response, category, author, at, source,
                        json.loads(overrides), license, None if answers is None else int(answers), review_, reviewed_by)


def _by_key(store, cur, table: str, columns: str, key: str):
    cur.execute(store.sql(f"SELECT {columns} FROM {table} WHERE draft_key = ?"), (key,))
    return cur.fetchone()


def _insert(store, cur, key, record, author, source, overrides, license, answers, at) -> bool:
    """Insert unless `key` is there already; True when this call added the row."""
    cur.execute(store.sql("INSERT INTO contributions (draft_key, instruction, context, response, category, author, "
                          "created_at, source, overrides, license, answers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                          "ON CONFLICT (draft_key) DO NOTHING"),
                (key, record["instruction"], record["context"], record["response"], record["category"], author, at,
                 source, json.dumps(overrides, ensure_ascii=False), license, answers))
    return cur.rowcount == 1


# -- saving --------------------------------------------------------------------------------------------
def save(store: Store, record: dict, *, key: str, author: str = "", source: str = "written", overrides=None,
         license: str = DEFAULT_LICENSE) -> Saved:
    """Save a record the writer wrote (no response: a question for others to answer). Checks first
    (`Invalid` names each field); returns once committed. The same `key` again returns the first save."""
    if source not in SOURCES or source == "answer":
        raise ContributionError(f"source: save() takes 'written' or 'correction' (answers go through save_answer), got {source!r:.40}.")
    key, overrides, license = _check_key(key), _check_overrides(overrides), _check_license(license)
    question = source == "written" and not (isinstance(record, dict) and str(record.get("response") or "").strip())
    problems = check(record, question=question)
    if problems:
        raise Invalid(problems)
    record, author = _clean(record), _author(author)
    _tables(store)
    with store.writing() as cur:
        new = _insert(store, cur, key, record, author, source, overrides, license, None, _now())
        return Saved(_contribution(_by_key(store, cur, "contributions", _COLUMNS, key)), new)


def save_answer(store: Store, question_id: int, response: str, *, key: str, author: str = "", overrides=None,
                license: str = DEFAULT_LICENSE) -> Saved:
    """Answer someone's question: a new record with the question's instruction, context and category and
    this response (source "answer"). One answer per question: `AlreadyAnswered` when another came first."""
    key, overrides, license = _check_key(key), _check_overrides(overrides), _check_license(license)
    author = _author(author)
    _tables(store)
    try:
        with store.writing() as cur:
            found = _by_key(store, cur, "contributions", _COLUMNS, key)
            if found:  # a double-click or a retry of this answer
                return Saved(_contribution(found), False)
            cur.execute(store.sql(f"SELECT {_COLUMNS} FROM contributions WHERE id = ?"), (int(question_id),))
            row = cur.fetchone()
            if row is None or not _contribution(row).is_question:
                raise ContributionError(f"Question #{question_id} does not exist (or already has its response).")
            question = _contribution(row)
            _refuse_answered(store, cur, question.id)
            record = {**question.record(), "response": response}
            problems = check(record)
            if problems:
                raise Invalid(problems)
            _insert(store, cur, key, _clean(record), author, "answer", overrides, license, question.id, _now())
            return Saved(_contribution(_by_key(store, cur, "contributions", _COLUMNS, key)), True)
    except (ContributionError, CurationError):
        raise
    except Exception:
        # PostgreSQL: another answer of this question committed between our check and our insert (the
        # UNIQUE answers column refused ours). Say who, unless it was this very draft (a retry).
        with store.reading() as cur:
            found = _by_key(store, cur, "contributions", _COLUMNS, key)
            if found:
                return Saved(_contribution(found), False)
            _refuse_answered(store, cur, int(question_id))
        raise


def _refuse_answered(store, cur, question_id: int) -> None:
    cur.execute(store.sql("SELECT author, created_at FROM contributions WHERE answers = ?"), (question_id,))
    taken = cur.fetchone()
    if taken:
        from dolly.curation import when

        raise AlreadyAnswered(f"Question #{question_id} was answered by {taken[0]} at {when(taken[1])} while you "
                              "were writing; your answer is still in the form. Pick another question.")


def review(store: Store, contribution_id: int, decision: str, *, reviewer: str = "", reason: str = "") -> Contribution:
    """Mark a contribution "accepted" or "rejected" (or "" to clear); rejected ones are left out of exports.

    Who may review (the one rule, used by the Contribute tab's review section): anyone the app lets in —
    under --auth any signed-in user, without it anyone (as "anonymous") — except that a named writer does
    not review their own records (the leaderboard's "accepted" is a contest). Each decision and its
    `reason` is kept in contribution_reviews (`review_log`)."""
    if decision not in REVIEWS:
        raise ContributionError(f"review: one of 'accepted', 'rejected' or '' (not reviewed), got {decision!r:.40}.")
    _tables(store)
    reviewer = _author(reviewer)
    with store.writing() as cur:
        cur.execute(store.sql("SELECT author FROM contributions WHERE id = ?"), (int(contribution_id),))
        found = cur.fetchone()
        if found is None:
            raise ContributionError(f"Contribution #{contribution_id} does not exist.")
        if reviewer != ANONYMOUS and reviewer == found[0]:
            raise ContributionError(f"Contribution #{contribution_id} is yours: another person reviews it.")
        cur.execute(store.sql("UPDATE contributions SET review = ?, reviewed_by = ?, reviewed_at = ? WHERE id = ?"),
                    (decision, reviewer if decision else "", _now() if decision else "", int(contribution_id)))
        cur.execute(store.sql("INSERT INTO contribution_reviews (contribution_id, decision, reason, reviewer, "
                              "reviewed_at) VALUES (?, ?, ?, ?, ?)"),
                    (int(contribution_id), decision, str(reason or "").strip()[:2000], reviewer, _now()))
        cur.execute(store.sql(f"SELECT {_COLUMNS} FROM contributions WHERE id = ?"), (int(contribution_id),))
        return _contribution(cur.fetchone())


# -- reading -------------------------------------------------------------------------------------------
def contributions(store: Store, *, author: str | None = None) -> list[Contribution]:
    """Every contribution (or one author's), oldest first."""
    _tables(store)
    with store.reading() as cur:
        if author is None:
            cur.execute(f"SELECT {_COLUMNS} FROM contributions ORDER BY id")
        else:
            cur.execute(store.sql(f"SELECT {_COLUMNS} FROM contributions WHERE author = ? ORDER BY id"), (author,))
        return [_contribution(row) for row in cur.fetchall()]


def get(store: Store, contribution_id: int) -> Contribution | None:
    _tables(store)
    with store.reading() as cur:
        cur.execute(store.sql(f"SELECT {_COLUMNS} FROM contributions WHERE id = ?"), (int(contribution_id),))
        row = cur.fetchone()
    return _contribution(row) if row else None


def open_questions(store: Store, *, exclude_author: str | None = None, limit: int = 50) -> list[Contribution]:
    """Questions (instructions saved without a response) nobody has answered, oldest first; without those
    written by `exclude_author` (the person asking for one to answer)."""
    _tables(store)
    sql = (f"SELECT {', '.join('q.' + c.strip() for c in _COLUMNS.split(','))} FROM contributions q "
           "WHERE q.response = '' AND q.source = 'written' AND q.review <> 'rejected' "
           "AND NOT EXISTS (SELECT 1 FROM contributions a WHERE a.answers = q.id)")
    args: tuple = ()
    if exclude_author is not None:
        sql += " AND q.author <> ?"
        args = (_author(exclude_author),)
    with store.reading() as cur:
        cur.execute(store.sql(sql + " ORDER BY q.id LIMIT ?"), (*args, int(limit)))
        return [_contribution(row) for row in cur.fetchall()]


def review_log(store: Store, contribution_id: int) -> list[tuple[str, str, str, str]]:
    """A contribution's review decisions, newest first: (decision, reason, reviewer, reviewed_at)."""
    _tables(store)
    with store.reading() as cur:
        cur.execute(store.sql("SELECT decision, reason, reviewer, reviewed_at FROM contribution_reviews "
                              "WHERE contribution_id = ? ORDER BY id DESC"), (int(contribution_id),))
        return [tuple(row) for row in cur.fetchall()]


def to_review(store: Store, *, limit: int = 50) -> list[Contribution]:
    """Records with a response that nobody has reviewed yet, oldest first (the review section's queue)."""
    _tables(store)
    with store.reading() as cur:
        cur.execute(store.sql(f"SELECT {_COLUMNS} FROM contributions WHERE response <> '' AND review = '' "
                              "ORDER BY id LIMIT ?"), (int(limit),))
        return [_contribution(row) for row in cur.fetchall()]


def leaderboard(store: Store) -> list[Standing]:
    """Records per person and category: written (with a response), questions, accepted; most written first."""
    _tables(store)
    with store.reading() as cur:
        cur.execute("SELECT author, category, "
                    "SUM(CASE WHEN response <> '' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN response = '' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN response <> '' AND review = 'accepted' THEN 1 ELSE 0 END) "
                    "FROM contributions WHERE review <> 'rejected' GROUP BY author, category")
        rows = [Standing(a, c, int(w), int(q), int(acc)) for a, c, w, q, acc in cur.fetchall()]
    return sorted(rows, key=lambda s: (-s.written, -s.accepted, s.author, s.category))


def revision(store: Store) -> tuple:
    """What changes whenever the contributions do (a record saved, a review decided): a reader that keeps
    a copy of `records` rebuilds it when this differs from the one it built it at."""
    _tables(store)
    with store.reading() as cur:
        cur.execute("SELECT COUNT(*), MAX(id) FROM contributions")
        saved = tuple(cur.fetchone())
        cur.execute("SELECT COUNT(*), MAX(id) FROM contribution_reviews")
        return saved + tuple(cur.fetchone())


def records(store: Store, *, meta: bool = False) -> pd.DataFrame:
    """The contributions as a dataset in the dolly schema (instruction, context, response, category):
    records with a response, rejected ones left out, oldest first. `meta` adds id, author, source,
    license, created_at and review after the four columns."""
    rows = [c for c in contributions(store) if not c.is_question and c.review != "rejected"]
    frame = pd.DataFrame({name: pd.Series([getattr(c, name) for c in rows], dtype="str") for name in REQUIRED_COLUMNS})
    if meta:
        frame["id"] = pd.Series([c.id for c in rows], dtype="int64")
        for name in ("author", "source", "license", "created_at", "review"):
            frame[name] = pd.Series([getattr(c, name) for c in rows], dtype="str")
    return frame


# -- ratings -------------------------------------------------------------------------------------------
_RATING_COLUMNS = ("id, draft_key, reply_id, rating, reason, model_id, settings, prompt, context, original, "
                   "corrected, contribution_id, author, created_at")


def _rating(row) -> Rating:
    (id_, key, reply_id, rating, reason, model_id, settings, prompt, context, original, corrected, contribution_id,
     author, at) = row
    return Rating(int(id_), key, reply_id, int(rating), reason, model_id, json.loads(settings), prompt, context,
                  original, corrected, None if contribution_id is None else int(contribution_id), author, at)


def save_rating(store: Store, *, key: str, reply_id: str, rating, model_id: str, prompt: str, original: str,
                reason: str = "", settings: dict | None = None, context: str = "", corrected: str = "",
                category: str = "", author: str = "", license: str = DEFAULT_LICENSE) -> Rating:
    """Keep a 👍/👎 on a model's reply (the chat's like event, or a /feedback caller). With `corrected` (the
    user's better answer) the pair also becomes a record, source "correction": instruction = `prompt`,
    context, response = `corrected`, `category` (checked like any record; `Invalid` names the field). One
    transaction; the same `key` again returns the first save."""
    key = _check_key(key)
    if rating not in RATINGS:
        raise ContributionError(f"rating: 'up' or 'down' (1 or -1), got {rating!r:.20}.")
    settings = settings or {}
    if not isinstance(settings, dict):
        raise ContributionError("settings: the generation settings as a dict (temperature, top_p, max_new_tokens, ...).")
    texts = {"reply_id": reply_id, "model_id": model_id, "prompt": prompt, "original": original, "reason": reason,
             "context": context, "corrected": corrected}
    for name, value in texts.items():
        if not isinstance(value, str):
            raise ContributionError(f"{name}: must be text, got {type(value).__name__}.")
        if problem := text_problem(value):
            raise ContributionError(f"{name}: is not valid text: {problem}.")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            raise ContributionError(f"{name}: at most {MAX_BYTES:,} bytes (40 kB).")
    record = None
    if corrected.strip():
        record = {"instruction": prompt, "context": context, "response": corrected, "category": category}
        problems = check(record)
        if problems:
            raise Invalid(problems)
        record, license = _clean(record), _check_license(license)
    author, at = _author(author), _now()
    _tables(store)
    with store.writing() as cur:
        found = _by_key(store, cur, "ratings", _RATING_COLUMNS, key)
        if found:
            return _rating(found)
        contribution_id = None
        if record is not None:
            _insert(store, cur, f"{key}:correction", record, author, "correction", {}, license, None, at)
            contribution_id = _by_key(store, cur, "contributions", "id", f"{key}:correction")[0]
        cur.execute(store.sql("INSERT INTO ratings (draft_key, reply_id, rating, reason, model_id, settings, prompt, "
                              "context, original, corrected, contribution_id, author, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (draft_key) DO NOTHING"),
                    (key, reply_id, RATINGS[rating], reason.strip(), model_id, json.dumps(settings, default=str),
                     prompt, context, original, corrected, contribution_id, author, at))
        return _rating(_by_key(store, cur, "ratings", _RATING_COLUMNS, key))


def ratings(store: Store) -> list[Rating]:
    _tables(store)
    with store.reading() as cur:
        cur.execute(f"SELECT {_RATING_COLUMNS} FROM ratings ORDER BY id")
        return [_rating(row) for row in cur.fetchall()]


def preference_pairs(store: Store) -> pd.DataFrame:
    """Corrected replies as a preference dataset in the columns TRL's DPOTrainer reads: prompt (the Dolly
    prompt of the user's message and context, as the model saw it), chosen (the correction), rejected (the
    model's original reply)."""
    pairs = [(format_prompt(r.prompt, r.context), r.corrected, r.original) for r in ratings(store)
             if r.corrected.strip() and r.corrected.strip() != r.original.strip()]
    return pd.DataFrame(pairs, columns=["prompt", "chosen", "rejected"], dtype="str")
