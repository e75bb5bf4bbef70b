"""Contributions (dolly/contributions.py) in the curation store, on a real SQLite file and a real PostgreSQL
server: checks naming the field, idempotent saves, questions and answers, the leaderboard, ratings and
preference pairs, 20 writers at once (threads and processes), kill -9 after a confirmed save, and a record
holding `### End` trained as text by a real `python -m train` run. Warnings: explorer/contribute.py."""
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest

from dolly import contributions as contrib
from dolly.contributions import AlreadyAnswered, ContributionError, Invalid, check
from dolly.curation import dataset_key, open_store
from dolly.prompt import END_KEY
from tests.conftest import killed_after_confirming, run_threads
from tests.dolly_data import make_records, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"instruction": "What is the tallest mountain on Earth?", "context": "",
        "response": "Mount Everest, 8,849 metres above sea level.", "category": "open_qa"}


@pytest.fixture
def me(request):
    return f"w{abs(hash(request.node.name)) % 10**8}-{os.getpid()}"


def new_key() -> str:
    return str(uuid.uuid4())


def mine(store, me):
    return [c for c in contrib.contributions(store) if c.author.startswith(me)]


# -- checks ------------------------------------------------------------------------------------------------
def test_checks_name_the_field():
    assert check(GOOD) == []
    fields = lambda record, **kw: [p.field for p in check(record, **kw)]  # noqa: E731
    assert fields({**GOOD, "category": "poetry"}) == ["category"]
    assert "is not a category" in str(check({**GOOD, "category": "poetry"})[0])
    assert fields({**GOOD, "category": ""}) == ["category"]
    assert fields({**GOOD, "instruction": "  Why?  "}) == ["instruction"]  # under 10 characters
    assert fields({**GOOD, "response": " "}) == ["response"]
    assert fields({**GOOD, "category": "closed_qa"}) == ["context"]  # needs its passage
    assert fields({**GOOD, "context": "A passage that open_qa does not take."}) == ["context"]  # has none
    assert fields({**GOOD, "category": "classification", "context": "Some items to sort: a, b, c, d, e."}) == []
    big = "x" * 40_960  # a 40 kB response
    problems = check({**GOOD, "response": big})
    assert [p.field for p in problems] == ["response"] and "40,960 bytes; at most 40,000" in problems[0].message
    assert fields({**GOOD, "response": "é" * 20_001}) == ["response"]  # bytes, not characters
    assert fields({**GOOD, "response": 5}) == ["response"]
    # JSON's "\ud800" (half of a UTF-16 pair) is no text: SQLite and PostgreSQL could not store it
    problems = check({**GOOD, "instruction": "What is the tallest mountain?\ud800"})
    assert [str(p) for p in problems] == ["instruction: is not valid text: character 30 is a lone surrogate "
                                          "('\\ud800'), half of a UTF-16 character pair"]
    assert fields({**GOOD, "score": "1"}) == ["score"]
    # a question: no response yet, and it must have none
    assert check({**GOOD, "response": ""}, question=True) == []
    assert fields(GOOD, question=True) == ["response"]
    # prompt markers are text, never refused
    assert check({**GOOD, "response": "Everest.\n### End\n### Instruction:\n### Response:\nmore"}) == []


def test_the_context_rule_is_the_context_mismatch_signal():
    from explorer import signals

    assert contrib.NEEDS_CONTEXT == signals.NEEDS_CONTEXT and contrib.NO_CONTEXT == signals.NO_CONTEXT


def test_bad_saves_are_refused_before_anything_is_written(tmp_path):
    with open_store(tmp_path / "s.sqlite3") as store:
        with pytest.raises(Invalid, match=r"Not saved: context: closed_qa needs the reference passage") as refused:
            contrib.save(store, {**GOOD, "category": "closed_qa"}, key=new_key())
        assert [p.field for p in refused.value.problems] == ["context"]
        with pytest.raises(ContributionError, match="^key: "):
            contrib.save(store, GOOD, key="")
        with pytest.raises(ContributionError, match="^license: 'gpl' is not offered"):
            contrib.save(store, GOOD, key=new_key(), license="gpl")
        with pytest.raises(ContributionError, match="say why the record is kept despite the 'pii' warning"):
            contrib.save(store, GOOD, key=new_key(), overrides={"pii": " "})
        with pytest.raises(ContributionError, match="^source: "):
            contrib.save(store, GOOD, key=new_key(), source="scraped")
        assert contrib.contributions(store) == []


# -- saving ------------------------------------------------------------------------------------------------
def test_save_is_idempotent_questions_answers_review_leaderboard(location, me):
    with open_store(location) as store:
        key = new_key()
        first = contrib.save(store, {**GOOD, "response": "Everest.\n### End"}, key=key, author=f"{me}-ann",
                             overrides={"duplicate": "asked differently"}, license="cc-by-4.0")
        again = contrib.save(store, GOOD, key=key, author=f"{me}-ann")  # a double-click / a retry
        assert first.new and not again.new and again.contribution == first.contribution
        c = first.contribution
        assert (c.response, c.source, c.overrides, c.license, c.author) == \
            ("Everest.\n### End", "written", {"duplicate": "asked differently"}, "cc-by-4.0", f"{me}-ann")
        assert c.created_at.endswith("+00:00")

        # a question for someone else, then that someone answers it
        question = contrib.save(store, {"instruction": "Which river flows through Vienna?", "category": "open_qa"},
                                key=new_key(), author=f"{me}-ann").contribution
        assert question.is_question
        assert question.id in [q.id for q in contrib.open_questions(store, exclude_author=f"{me}-bob")]
        assert question.id not in [q.id for q in contrib.open_questions(store, exclude_author=f"{me}-ann")]  # not your own
        with pytest.raises(Invalid, match="response: write the response"):
            contrib.save_answer(store, question.id, "", key=new_key(), author=f"{me}-bob")
        answer_key = new_key()
        answer = contrib.save_answer(store, question.id, "The Danube.", key=answer_key, author=f"{me}-bob")
        assert answer.new and (answer.contribution.instruction, answer.contribution.answers, answer.contribution.source) \
            == (question.instruction, question.id, "answer")
        assert not contrib.save_answer(store, question.id, "The Danube.", key=answer_key, author=f"{me}-bob").new
        assert question.id not in [q.id for q in contrib.open_questions(store)]
        with pytest.raises(AlreadyAnswered, match=rf"Question #{question.id} was answered by {me}-bob at"):
            contrib.save_answer(store, question.id, "Danube", key=new_key(), author=f"{me}-cy")
        with pytest.raises(ContributionError, match="does not exist"):
            contrib.save_answer(store, c.id, "An answer to a record that has its response.", key=new_key())

        contrib.review(store, c.id, "accepted", reviewer="cy")
        contrib.save(store, {**GOOD, "instruction": "Name three prime numbers please."}, key=new_key(), author=f"{me}-bob")
        rejected = contrib.save(store, {**GOOD, "instruction": "A record a reviewer rejects."}, key=new_key(),
                                author=f"{me}-bob").contribution
        contrib.review(store, rejected.id, "rejected", reviewer="cy")
        with pytest.raises(ContributionError, match="review: one of"):
            contrib.review(store, c.id, "great")
        board = {(s.author, s.category): (s.written, s.questions, s.accepted) for s in contrib.leaderboard(store)
                 if s.author.startswith(me)}
        assert board == {(f"{me}-ann", "open_qa"): (1, 1, 1), (f"{me}-bob", "open_qa"): (2, 0, 0)}

        frame = contrib.records(store, meta=True)
        frame = frame[frame["author"].str.startswith(me)]
        assert list(frame.columns[:4]) == ["instruction", "context", "response", "category"]
        assert sorted(frame["instruction"]) == sorted([GOOD["instruction"], question.instruction,
                                                       "Name three prime numbers please."])  # no question, no rejected
        assert "Everest.\n### End" in set(frame["response"])  # stored as typed


def test_ratings_corrections_and_preference_pairs(location, me):
    with open_store(location) as store:
        key = new_key()
        settings = {"temperature": 0.7, "top_p": 0.92, "max_new_tokens": 256}
        rating = contrib.save_rating(store, key=key, reply_id="reply-1", rating="down", reason="wrong fruit",
                                     model_id="databricks/dolly-v2-3b", settings=settings,
                                     prompt="Name a fruit that is red.", original="A banana.", corrected="An apple.",
                                     category="open_qa", author=f"{me}-ann")
        assert (rating.rating, rating.settings, rating.original, rating.corrected, rating.author) == \
            (-1, settings, "A banana.", "An apple.", f"{me}-ann")
        assert contrib.save_rating(store, key=key, reply_id="reply-1", rating="down", model_id="m", prompt="p",
                                   original="o") == rating  # a retry: the first save
        record = contrib.get(store, rating.contribution_id)
        assert (record.instruction, record.response, record.source, record.author) == \
            ("Name a fruit that is red.", "An apple.", "correction", f"{me}-ann")
        up = contrib.save_rating(store, key=new_key(), reply_id="reply-2", rating="👍", model_id="m", prompt="Hi there",
                                 original="Hello!", author=f"{me}-ann")
        assert up.rating == 1 and up.contribution_id is None
        with pytest.raises(Invalid, match="category: choose one of"):  # a correction is a record: checked
            contrib.save_rating(store, key=new_key(), reply_id="r", rating="down", model_id="m",
                                prompt="Name a fruit that is red.", original="A banana.", corrected="An apple.")
        with pytest.raises(ContributionError, match="rating: 'up' or 'down'"):
            contrib.save_rating(store, key=new_key(), reply_id="r", rating="meh", model_id="m", prompt="p", original="o")
        with pytest.raises(ContributionError, match=r"^reason: is not valid text: character 3 is a lone surrogate"):
            contrib.save_rating(store, key=new_key(), reply_id="r", rating="down", model_id="m", prompt="p",
                                original="o", reason="no\udc00")
        pairs = contrib.preference_pairs(store)
        assert list(pairs.columns) == ["prompt", "chosen", "rejected"]
        row = pairs[pairs["chosen"] == "An apple."].iloc[0]
        assert row["rejected"] == "A banana." and row["prompt"].rstrip().endswith("### Response:")
        assert "Name a fruit that is red." in row["prompt"]


# -- many writers ------------------------------------------------------------------------------------------
WRITERS = 20


def test_20_writer_threads_every_record_once(location, me):
    stores = [open_store(location) for _ in range(4)]
    try:
        barrier, errors, saved = threading.Barrier(WRITERS), [], []
        shared = new_key()  # everyone saves this same draft: one record

        def write(i):
            barrier.wait()
            try:
                store = stores[i % 4]
                for step in range(3):
                    record = {**GOOD, "instruction": f"Writer {i} asks question number {step}?"}
                    key = new_key()
                    saved.append(contrib.save(store, record, key=key, author=f"{me}-{i}"))
                    saved.append(contrib.save(store, record, key=key, author=f"{me}-{i}"))  # double-click
                saved.append(contrib.save(store, {**GOOD, "instruction": "The one shared draft, saved by all?"},
                                          key=shared, author=f"{me}-{i}"))
            except Exception as error:  # noqa: BLE001 - the assertion names it
                errors.append(error)

        run_threads(write, WRITERS)
        assert errors == []
        kept = mine(stores[0], me)
        assert len(kept) == WRITERS * 3 + 1 and sum(s.new for s in saved) == WRITERS * 3 + 1
        assert sorted(c.instruction for c in kept if c.key != shared) == \
            sorted(f"Writer {i} asks question number {step}?" for i in range(WRITERS) for step in range(3))
        assert len({s.contribution.id for s in saved if s.contribution.key == shared}) == 1
    finally:
        for store in stores:
            store.close()


WRITER = """
import sys, uuid
from dolly import contributions as contrib
from dolly.curation import open_store
location, me, i, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = open_store(location)
contrib.contributions(store)
print("ready", flush=True)
sys.stdin.readline()  # all start together
new = 0
for step in range(3):
    record = {"instruction": f"Process {i} asks question number {step}?", "context": "", "response": "An answer.",
              "category": "open_qa"}
    key = str(uuid.uuid4())
    new += contrib.save(store, record, key=key, author=f"{me}-{i}").new
    new += contrib.save(store, record, key=key, author=f"{me}-{i}").new
shared_record = {"instruction": "The one shared draft, saved by all?", "context": "", "response": "Yes.",
                 "category": "open_qa"}
saved = contrib.save(store, shared_record, key=shared, author=f"{me}-{i}")
print(new, int(saved.new), saved.contribution.id, flush=True)
"""


def test_20_writer_processes_every_record_once(location, me):
    shared = new_key()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, location, me, str(i), shared], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(WRITERS)]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        finished = [writer.communicate(timeout=300) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in finished]
    outcomes = [list(map(int, out.split())) for out, _ in finished]
    assert all(new == 3 for new, _, _ in outcomes)  # each second save of a draft added nothing
    assert sum(first for _, first, _ in outcomes) == 1 and len({cid for _, _, cid in outcomes}) == 1
    with open_store(location) as store:
        kept = mine(store, me)
    assert len(kept) == WRITERS * 3 + 1
    assert sorted(c.instruction for c in kept if c.key != shared) == \
        sorted(f"Process {i} asks question number {step}?" for i in range(WRITERS) for step in range(3))


SAVE_THEN_WAIT = """
import sys, time
from dolly import contributions as contrib
from dolly.curation import open_store
record = {"instruction": "Saved right before the kill?", "context": "", "response": "Kept.", "category": "open_qa"}
saved = contrib.save(open_store(sys.argv[1]), record, key=sys.argv[2], author=sys.argv[3])
print("confirmed", saved.contribution.id, flush=True)
time.sleep(600)
"""


def test_kill_9_after_a_confirmed_save_loses_nothing(location, me):
    key = new_key()
    line = killed_after_confirming(SAVE_THEN_WAIT, location, key, me).split()
    with open_store(location) as store:
        kept = mine(store, me)
        assert [(c.id, c.key, c.response) for c in kept] == [(int(line[1]), key, "Kept.")]


def test_one_store_holds_curation_and_contributions(tmp_path):
    """The contribution tables live in the curation store's database, beside its decisions."""
    import sqlite3

    path = tmp_path / "curation.sqlite3"
    frame = pd.DataFrame(make_records(8))
    with open_store(path) as store:
        store.edit(dataset_key(frame), 3, 0, {"response": "edited"}, author="ann")
        contrib.save(store, GOOD, key=new_key(), author="ann")
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"curation_state", "curation_history", "contributions", "ratings"} <= tables
    with open_store(path) as store:  # and a second opening reads both
        assert store.state(dataset_key(frame), 3).version == 1 and len(contrib.contributions(store)) == 1


# -- warnings ------------------------------------------------------------------------------------------------
def test_warnings_name_the_field_and_show_the_duplicate():
    from explorer.contribute import GUIDELINES, Reference, examples, warnings

    records = make_records(400, seed=3)
    records.append({"instruction": "What is the tallest mountain in the world?", "context": "",
                    "response": "Mount Everest is the tallest mountain above sea level.", "category": "open_qa"})
    reference = Reference(pd.DataFrame(records))
    assert reference.main_language() == "en"
    assert warnings(GOOD, reference) == []
    twin = warnings({"instruction": "what is the TALLEST mountain in the world", "context": "",
                     "response": "Mount Everest is the tallest mountain above sea level!!", "category": "open_qa"}, reference)
    assert [(w.signal, w.field, w.row) for w in twin] == [("duplicate", "instruction", 400)]
    assert "row 400 of the loaded dataset" in twin[0].message and twin[0].duplicate["response"].startswith("Mount Everest")
    flagged = warnings({**GOOD, "response": "Everest [12]. Write to ann@example.com or call +1 415 555 0100."}, reference)
    assert [(w.signal, w.field) for w in flagged] == [("citations", "response"), ("pii", "response")]
    assert "[12]" in flagged[0].message and "ann@example.com" in flagged[1].message
    french = warnings({"instruction": "Quelle est la plus haute montagne du monde et pourquoi?", "context": "",
                       "response": "Le mont Everest est la plus haute montagne du monde.", "category": "open_qa"}, reference)
    assert [(w.signal, w.field) for w in french] == [("language", "instruction")] and "(fr)" in french[0].message
    assert set(GUIDELINES) == set(contrib.CATEGORIES)
    two = examples(pd.DataFrame(records), "closed_qa")
    assert len(two) == 2 and all(r["category"] == "closed_qa" and r["context"] for r in two)


# -- the whole loop: a record with `### End` trains as text ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


def test_a_contribution_holding_the_end_marker_trains_as_text(tmp_path, tiny):
    from transformers import AutoTokenizer

    from dolly.data import load_records
    from dolly.prompt import add_special_tokens
    from train.data import tokenize_frame

    marked = {"instruction": "How does a Dolly prompt end?", "context": "",
              "response": "With the line ### End after the response.", "category": "open_qa"}
    with open_store(tmp_path / "store.sqlite3") as store:
        contrib.save(store, marked, key=new_key(), author="ann")
        for i, record in enumerate(make_records(24, seed=5)):
            contrib.save(store, record, key=new_key(), author="bob")
        data = write_jsonl(tmp_path / "contributions.jsonl", contrib.records(store).to_dict("records"))

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    add_special_tokens(tokenizer)
    end_id = tokenizer.convert_tokens_to_ids(END_KEY)
    frame = load_records(str(data), progress=False)
    rows, _ = tokenize_frame(tokenizer, frame, 256, progress=False)
    row = next(r for r in rows if frame["instruction"][r["record"]] == marked["instruction"])
    labels = [t for t in row["labels"] if t != -100]
    assert labels.count(end_id) == 1 and labels[-1] == end_id  # the typed one is text; only the real end is the marker

    train = subprocess.run([sys.executable, "-m", "train", "--base-model", tiny, "--data", data, "--output-dir",
                            tmp_path / "model", "--max-length", "256", "--test-size", "4", "--per-device-batch-size", "4",
                            "--max-steps", "2", "--warmup-steps", "0", "--samples-per-category", "0", "--save-steps", "100"],
                           cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"[train] {len(frame)} records from {data}" in train.stdout
    assert json.loads((tmp_path / "model" / "config.json").read_text())


# -- the Contribute tab's plain functions ----------------------------------------------------------------------
def test_the_tab_logic_saves_once_asks_a_reason_for_warnings_and_ranks_writers(tmp_path):
    from explorer import contribute as logic

    records = make_records(80, seed=6)
    reference = logic.Reference(pd.DataFrame(records))
    guideline = logic.guideline_md("summarization", reference.frame)
    assert guideline.startswith("**Summarization:") and "Example 2." in guideline
    assert "Choose a category" in logic.guideline_md("", None)
    with open_store(tmp_path / "s.sqlite3") as store:
        draft = logic.new_draft("open_qa") | {"instruction": "Why?", "response": "Because."}
        said, found = logic.feedback_md(draft, reference)
        assert "**instruction**: write at least 10 characters" in said and found == []
        message, saved = logic.save_draft(store, draft, "ann", reference)
        assert saved is None and message.startswith("**Not saved.** **instruction**:")

        draft = logic.new_draft("open_qa") | {"instruction": "Which mountain is the tallest on Earth?",
                                              "response": "Everest [3]. Mail ann@example.com for more."}
        message, saved = logic.save_draft(store, draft, "ann", reference)  # warnings and no reason
        assert saved is None and "**response** (citations)" in message and "Reason to keep it" in message
        message, saved = logic.save_draft(store, draft | {"reason": "it is a public address"}, "ann", reference)
        assert message.startswith("**Saved** as record #") and saved.contribution.overrides == \
            {"citations": "it is a public address", "pii": "it is a public address"}
        again, repeat = logic.save_draft(store, draft | {"reason": "it is a public address"}, "ann", reference)
        assert "already saved" in again and repeat.contribution.id == saved.contribution.id

        asked, question = logic.save_draft(store, logic.new_draft("open_qa") | {
            "instruction": "Which river flows through Budapest?", "response": "ignored"}, "bob", reference, question=True)
        assert "as question #" in asked and question.contribution.is_question
        shown = logic.question_md(contrib.open_questions(store, exclude_author="ann")[0])
        assert f"Question #{question.contribution.id}" in shown and "Budapest" in shown
        key = new_key()
        said, answer = logic.save_answer_md(store, question.contribution.id, "The Danube.", key, "ann", reference)
        assert said.startswith(f"**Saved** your answer to question #{question.contribution.id}")
        assert "already saved" in logic.save_answer_md(store, question.contribution.id, "The Danube.", key, "ann",
                                                       reference)[0]
        board = logic.leaderboard_md(contrib.leaderboard(store))
        assert board.splitlines()[2] == "| 1 | ann | 2 | 0 | 0 | open_qa 2 |"
        assert board.splitlines()[3] == "| 2 | bob | 0 | 0 | 1 |  |"


# -- python -m explorer.contributions --------------------------------------------------------------------------
def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "explorer.contributions", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_export_cli_writes_the_dolly_schema_and_preference_pairs(location, me, tmp_path):
    from dolly.data import load_records

    with open_store(location) as store:
        contrib.save(store, {**GOOD, "response": "Everest.\n### End"}, key=new_key(), author=f"{me}-ann")
        contrib.save(store, {"instruction": "An open question nobody answered yet?", "category": "open_qa"},
                     key=new_key(), author=f"{me}-ann")
        contrib.save_rating(store, key=new_key(), reply_id="r", rating="down", model_id="m",
                            prompt="Name a fruit that is red.", original="A banana.", corrected="An apple.",
                            category="open_qa", author=f"{me}-bob")
        expected = contrib.records(store)
    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"contributions.{suffix}"
        done = run_cli("export", "--db", location, "--output", out)
        assert done.returncode == 0, done.stderr
        assert f"{len(expected)} contributed records from" in done.stdout
        got = load_records(str(out), progress=False)
        assert list(got.columns) == ["instruction", "context", "response", "category"]
        pd.testing.assert_frame_equal(got, expected)
    assert "Everest.\n### End" in set(got["response"]) and "An open question nobody answered yet?" not in set(got["instruction"])
    meta = tmp_path / "meta.jsonl"
    assert run_cli("export", "--db", location, "--output", meta, "--meta").returncode == 0
    assert {"author", "source", "license"} <= set(pd.read_json(meta, lines=True).columns)
    pairs = tmp_path / "pairs.jsonl"
    assert run_cli("preferences", "--db", location, "--output", pairs).returncode == 0
    frame = pd.read_json(pairs, lines=True)
    assert list(frame.columns) == ["prompt", "chosen", "rejected"] and "An apple." in set(frame["chosen"])


def test_export_cli_refuses_bad_input_with_status_2(tmp_path):
    db = tmp_path / "s.sqlite3"
    open_store(db).close()
    (tmp_path / "taken.jsonl").write_text("")
    for argv, message in ((("export", "--db", db, "--output", tmp_path / "out.txt"), "unknown file type '.txt'"),
                          (("export", "--db", db, "--output", tmp_path / "taken.jsonl"), "exists; pass --force"),
                          (("export", "--db", tmp_path / "none.sqlite3", "--output", tmp_path / "o.jsonl"),
                           "no curation store there"),
                          (("publish", "--output", tmp_path / "o.jsonl"), "invalid choice: 'publish'")):
        done = run_cli(*argv)
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr)
    assert not (tmp_path / "o.jsonl").exists() and (tmp_path / "taken.jsonl").read_text() == ""


# -- several --data mixed ----------------------------------------------------------------------------------------
def test_read_dataset_mixes_several_sources_by_one_rule(tmp_path):
    from dolly.data import DataError, read_dataset, source_name

    a = write_jsonl(tmp_path / "a.jsonl", make_records(10, seed=1))
    b = pd.DataFrame(make_records(4, seed=2)).to_parquet(tmp_path / "b.parquet") or tmp_path / "b.parquet"
    loaded = read_dataset([str(a), str(b)], progress=False)
    assert loaded.sources == {str(a): 10, str(b): 4} and len(loaded.frame) == 14
    assert list(loaded.frame.columns) == ["instruction", "context", "response", "category"]
    assert loaded.frame["instruction"].iloc[10] == make_records(4, seed=2)[0]["instruction"]  # in the order given
    assert read_dataset([str(a)], progress=False).sources == {}  # one source: as before
    assert source_name([str(a), str(b)]) == f"{a} + {b}"
    with pytest.raises(DataError, match="Data file not found"):
        read_dataset([str(a), str(tmp_path / "missing.jsonl")], progress=False)


def test_train_mixes_dolly_data_and_a_contributions_export(tmp_path, tiny):
    dolly = write_jsonl(tmp_path / "dolly.jsonl", make_records(40, seed=8))
    db = tmp_path / "store.sqlite3"
    with open_store(db) as store:
        for i, record in enumerate(make_records(16, seed=9)):
            contrib.save(store, record, key=new_key(), author=f"writer{i % 3}")
    export = tmp_path / "contributions.parquet"
    assert run_cli("export", "--db", db, "--output", export).returncode == 0
    train = subprocess.run([sys.executable, "-m", "train", "--base-model", tiny, "--data", dolly, export, "--output-dir",
                            tmp_path / "model", "--max-length", "256", "--test-size", "8", "--per-device-batch-size", "4",
                            "--max-steps", "2", "--warmup-steps", "0", "--samples-per-category", "0", "--save-steps", "100"],
                           cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"[train] mixing 40 records from {dolly}, 16 records from {export}" in train.stdout
    assert f"[train] 56 records from {dolly} + {export}" in train.stdout
    run = json.loads((tmp_path / "model" / "run_args.json").read_text())
    assert run["data"] == [str(dolly), str(export)]
    assert f"{dolly} + {export}" in (tmp_path / "model" / "README.md").read_text()
