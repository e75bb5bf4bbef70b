"""The curation store (dolly/curation.py) on a real SQLite file and a real PostgreSQL server: decisions,
history and undo, optimistic versioning under concurrent saves, kill -9 right after a save, identity."""
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from dolly import curation
from dolly.curation import Conflict, CurationError, NothingToUndo, RecordState, StoreError, curated, dataset_key, open_store
from dolly.data import load_records
from explorer.export import write_table
from tests.conftest import killed_after_confirming, run_threads
from tests.dolly_data import make_records, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def key(request):
    return f"test-{request.node.name}-{os.getpid()}"


def test_decisions_history_undo_and_counts(location, key):
    with open_store(location) as store:
        assert store.state(key, 5) == RecordState(5)
        s = store.edit(key, 5, 0, {"response": "Better.", "category": "open_qa"}, author="ann")
        assert (s.version, s.status, s.fields, s.author) == (1, "edited", {"response": "Better.", "category": "open_qa"}, "ann")
        s = store.edit(key, 5, 1, {"context": "Ctx."}, author="bob")  # fields add up
        assert s.fields == {"response": "Better.", "category": "open_qa", "context": "Ctx."}
        s = store.exclude(key, 5, 2, "off topic", author="")  # no --auth: anonymous
        assert (s.status, s.reason, s.author, s.fields["context"]) == ("excluded", "off topic", "anonymous", "Ctx.")
        store.accept(key, 9, 0, author="ann")
        store.edit(key, 11, 0, {"instruction": "Why?"}, author="ann")
        assert store.counts(key) == {"edited": 1, "excluded": 1, "accepted": 1}
        assert sorted(store.states(key)) == [5, 9, 11]

        history = store.history(key, 5)
        assert [(c.version, c.action, c.author) for c in history] == [(1, "edit", "ann"), (2, "edit", "bob"),
                                                                      (3, "exclude", "anonymous")]
        assert history[0].before.status == "" and history[0].after.fields["response"] == "Better."
        assert history[2].before.fields["context"] == "Ctx." and history[2].after.reason == "off topic"
        assert all(c.at.endswith("+00:00") for c in history)

        s = store.undo(key, 5, 3, author="cy")  # the exclusion goes: edited again, with its edits
        assert (s.version, s.status, s.fields["context"]) == (4, "edited", "Ctx.")
        s = store.undo(key, 5, 4, author="cy")  # then bob's edit
        assert s.fields == {"response": "Better.", "category": "open_qa"}
        s = store.undo(key, 5, 5, author="cy")  # then ann's: the original
        assert (s.version, s.status, s.fields) == (6, "", {})
        with pytest.raises(NothingToUndo, match="Row 5 has no change to undo"):
            store.undo(key, 5, 6)
        assert [c.action for c in store.history(key, 5)][-3:] == ["undo"] * 3  # undo is history too
        assert store.counts(key) == {"edited": 1, "excluded": 0, "accepted": 1}
        # a new change after undos is undone first
        store.edit(key, 5, 6, {"response": "Again."})
        assert store.undo(key, 5, 7).status == ""


def test_stale_save_is_refused_with_who_and_when(location, key):
    replica_a, replica_b = open_store(location), open_store(location)  # two app copies, one store
    try:
        opened = replica_a.state(key, 3).version
        assert replica_b.state(key, 3).version == opened == 0
        replica_a.edit(key, 3, opened, {"response": "Ann's text."}, author="ann")
        with pytest.raises(Conflict) as caught:
            replica_b.edit(key, 3, opened, {"response": "Bob's text."}, author="bob")
        message = str(caught.value)
        assert "Row 3 was changed by ann at " in message and " UTC since you opened it" in message
        assert caught.value.current.fields == {"response": "Ann's text."} and caught.value.current.version == 1
        assert caught.value.current.apply({"response": "old", "context": "c"}) == {"response": "Ann's text.", "context": "c"}
        copy = pickle.loads(pickle.dumps(caught.value))  # crosses a process pool whole
        assert str(copy) == message and copy.current == caught.value.current
        for store in (replica_a, replica_b):  # never overwritten
            assert store.state(key, 3).fields == {"response": "Ann's text."}
        # reopened at the newer version, the save goes through
        assert replica_b.edit(key, 3, 1, {"response": "Bob's text."}, author="bob").version == 2
        for action in (lambda: replica_a.exclude(key, 3, 1, "dup"), lambda: replica_a.accept(key, 3, 1),
                       lambda: replica_a.undo(key, 3, 1)):
            with pytest.raises(Conflict, match="changed by bob"):
                action()
        assert len(replica_a.history(key, 3)) == 2
    finally:
        replica_a.close()
        replica_b.close()


def test_concurrent_saves_of_different_records_all_kept_same_record_one_wins(location, key):
    stores = [open_store(location) for _ in range(4)]
    editors = 8
    try:
        barrier = threading.Barrier(editors)
        results, errors = {}, []

        def different(i):
            barrier.wait()
            try:
                for step in range(5):
                    results[(i, step)] = stores[i % 4].edit(key, i, step, {"response": f"editor {i} step {step}"}, f"e{i}")
            except Exception as error:  # noqa: BLE001 - the assertion below names it
                errors.append(error)

        run_threads(different, editors)
        assert errors == []
        states = stores[0].states(key)
        assert {row: s.fields["response"] for row, s in states.items()} == {i: f"editor {i} step 4" for i in range(editors)}
        assert all(s.version == 5 for s in states.values())

        # Everyone saves row 100, each having opened version 0: exactly one is kept, the rest are refused.
        barrier = threading.Barrier(editors)
        won, refused = [], []

        def same(i):
            barrier.wait()
            try:
                won.append(stores[i % 4].edit(key, 100, 0, {"response": f"from {i}"}, f"e{i}"))
            except Conflict as conflict:
                refused.append(conflict)

        run_threads(same, editors)
        assert len(won) == 1 and len(refused) == editors - 1
        kept = stores[1].state(key, 100)
        assert kept.version == 1 and kept.fields == won[0].fields
        assert all(c.current.author == won[0].author for c in refused)
        assert len(stores[2].history(key, 100)) == 1
    finally:
        for store in stores:
            store.close()


REPLICA = """
import sys
from dolly.curation import Conflict, open_store
location, key, me = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(location)
print("ready", flush=True)
sys.stdin.readline()  # all start together
for step in range(20):
    store.edit(key, me, step, {"response": f"replica {me} step {step}"}, author=f"r{me}")
try:
    store.edit(key, 50, 0, {"response": f"replica {me}"}, author=f"r{me}")
    print("won", flush=True)
except Conflict as conflict:
    print("refused", conflict.current.author, flush=True)
"""


def test_replicas_in_separate_processes_share_one_store(location, key):
    """Three app processes on one store at once: all their saves of their own records are kept; of three saves
    of the same record opened at the same version, one is kept and two are refused naming the winner."""
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, location, key, str(me)], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for me in range(3)]
    try:
        for replica in replicas:
            assert replica.stdout.readline().strip() == "ready", replica.stderr.read()
        for replica in replicas:
            replica.stdin.write("go\n")
            replica.stdin.flush()
        finished = [replica.communicate(timeout=120) for replica in replicas]
        outcomes = [out.strip() for out, _ in finished]
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
    assert all(r.returncode == 0 for r in replicas), [err for _, err in finished]
    assert sorted(o.split()[0] for o in outcomes) == ["refused", "refused", "won"]
    winner = f"r{outcomes.index('won')}"
    assert all(o == f"refused {winner}" for o in outcomes if o != "won")
    with open_store(location) as store:
        states = store.states(key)
        assert {row: (s.version, s.fields["response"]) for row, s in states.items() if row < 3} == \
            {me: (20, f"replica {me} step 19") for me in range(3)}
        assert states[50].author == winner and len(store.history(key, 50)) == 1


def test_edit_many_saves_all_or_nothing(location, key):
    with open_store(location) as store:
        store.edit(key, 2, 0, {"response": "someone else"}, author="ann")
        with pytest.raises(Conflict, match=r"1 of the 3 records were changed since you opened them.*Row 2 .*"
                                            r"Nothing was saved"):
            store.edit_many(key, {1: (0, {"context": "a"}), 2: (0, {"context": "b"}), 3: (0, {"context": "c"})}, "bob")
        assert sorted(store.states(key)) == [2]
        saved = store.edit_many(key, {1: (0, {"context": "a"}), 2: (1, {"context": "b"}), 3: (0, {"context": "c"})}, "bob")
        assert [s.version for s in saved] == [1, 2, 1]
        assert store.state(key, 2).fields == {"response": "someone else", "context": "b"}


SAVE_THEN_WAIT = """
import sys, time
from dolly.curation import open_store
store = open_store(sys.argv[1])
state = store.edit(sys.argv[2], 7, 0, {"response": "saved before the kill"}, author="ann")
print("confirmed", state.version, flush=True)
time.sleep(600)
"""


def test_kill_9_right_after_a_save_loses_nothing(location, key):
    assert killed_after_confirming(SAVE_THEN_WAIT, location, key) == "confirmed 1"
    with open_store(location) as store:
        state = store.state(key, 7)
        assert (state.version, state.fields, state.author) == (1, {"response": "saved before the kill"}, "ann")
        assert store.edit(key, 7, 1, {"response": "and it goes on"}).version == 2


def test_postgres_crash_after_a_save_loses_nothing_and_the_store_reconnects(pg_server, key):
    store = open_store(pg_server.url)
    try:
        store.edit(key, 1, 0, {"response": "confirmed before the crash"}, author="ann")
        pg_server.restart("immediate")  # as a crash: no checkpoint, the server replays its WAL
        try:  # the pooled connection died with the server: said clearly, and the next call reconnects
            state = store.state(key, 1)
        except StoreError as error:
            assert "did not answer" in str(error) and "Try again" in str(error)
            state = store.state(key, 1)
        assert (state.version, state.fields) == (1, {"response": "confirmed before the crash"})
        assert store.edit(key, 1, 1, {"response": "after"}, author="bob").version == 2
    finally:
        store.close()


def test_decisions_survive_a_restart_and_follow_the_same_data(tmp_path):
    records = make_records(30, seed=3)
    jsonl = write_jsonl(tmp_path / "a.jsonl", records)
    parquet = tmp_path / "copy" / "a.parquet"
    parquet.parent.mkdir()
    write_table(pa.Table.from_pandas(load_records(str(jsonl), progress=False), preserve_index=False), parquet, "parquet")
    key = dataset_key(load_records(str(jsonl), progress=False))
    assert dataset_key(load_records(str(parquet), progress=False)) == key  # same records, another file: same data
    table = pa.Table.from_pandas(load_records(str(jsonl), progress=False))
    assert dataset_key(table) == key  # a Table too, however it is chunked
    assert dataset_key(pa.concat_tables([table.slice(0, 7), table.slice(7, 1), table.slice(8)])) == key
    changed = [dict(r) for r in records]
    changed[29]["response"] += "!"
    assert dataset_key(pd.DataFrame(changed)) != key
    assert dataset_key(pd.DataFrame(records[:29])) != key
    swapped = [records[1], records[0], *records[2:]]
    assert dataset_key(pd.DataFrame(swapped)) != key  # rows moved: row numbers would point elsewhere
    # field boundaries count: "ab"+"c" is not "a"+"bc"
    one = pd.DataFrame([{"instruction": "ab", "context": "c", "response": "r", "category": "x"}])
    two = pd.DataFrame([{"instruction": "a", "context": "bc", "response": "r", "category": "x"}])
    assert dataset_key(one) != dataset_key(two)
    assert len(dataset_key(pd.DataFrame(columns=["instruction", "context", "response", "category"]))) == 32

    db = tmp_path / "db" / "curation.sqlite3"
    with open_store(db) as store:
        store.edit(key, 4, 0, {"response": "fixed"}, author="ann")
    with open_store(str(db)) as store:  # the app started again
        assert store.state(key, 4).fields == {"response": "fixed"}
        assert store.states("another dataset") == {}


def test_curated_applies_edits_removes_excluded_keeps_the_schema(tmp_path):
    frame = load_records(str(write_jsonl(tmp_path / "d.jsonl", make_records(10, seed=1))), progress=False)
    frame["source"] = [f"s{i}" for i in range(10)]  # an extra column stays
    states = {1: RecordState(1, 1, "edited", {"response": "new one"}),
              2: RecordState(2, 2, "excluded", {"response": "gone anyway"}, "dup"),
              3: RecordState(3, 1, "accepted"),
              4: RecordState(4, 3, "", {}),  # undone: the original
              6: RecordState(6, 2, "accepted", {"instruction": "kept edit"})}
    out = curated(frame, states)
    assert len(out) == 9 and list(out.columns) == list(frame.columns)
    assert out.loc[1, "response"] == "new one" and out.loc[5, "instruction"] == "kept edit"
    assert list(out["source"]) == [f"s{i}" for i in range(10) if i != 2]
    assert frame.loc[1, "response"] != "new one"  # the input is untouched
    marked = curated(frame, states, column=True)
    assert list(marked.columns) == [*frame.columns, "curation"]
    assert list(marked["curation"]) == ["", "edited", "accepted", "", "", "accepted", "", "", ""]

    # A selection (Explorer export): a Table of some rows, in the selection's order, with their row numbers.
    table = pa.Table.from_pandas(frame.iloc[[6, 2, 0]], preserve_index=False)
    picked = curated(table, states, rows=[6, 2, 0], column=True)
    assert isinstance(picked, pa.Table) and picked.num_rows == 2
    assert picked["instruction"].to_pylist()[0] == "kept edit" and picked["curation"].to_pylist() == ["accepted", ""]
    with pytest.raises(CurationError, match="2 row numbers for 3 records"):
        curated(table, states, rows=[6, 2])

    # written as an export, it loads back as the dolly schema training reads
    path = tmp_path / "curated.jsonl"
    write_table(pa.Table.from_pandas(marked, preserve_index=False), path, "jsonl")
    back = load_records(str(path), progress=False)
    assert list(back.columns[:4]) == ["instruction", "context", "response", "category"] and len(back) == 9
    assert json.loads(path.read_text().splitlines()[1])["curation"] == "edited"


def test_bad_saves_are_clear_errors(tmp_path):
    with open_store(tmp_path / "c.sqlite3") as store:
        for fields, match in (({}, "new values"), ({"answer": "x"}, "Only instruction, context, response, category"),
                              ({"response": 3}, "text"), ({"category": " "}, "category cannot be empty")):
            with pytest.raises(CurationError, match=match):
                store.edit("k", 0, 0, fields)
        with pytest.raises(CurationError, match="reason is required"):
            store.exclude("k", 0, 0, "  ")
        with pytest.raises(CurationError, match="row number"):
            store.accept("k", -1, 0)
        with pytest.raises(CurationError, match="version"):
            store.accept("k", 0, "1")
        assert store.states("k") == {}


def test_open_store_locations_and_errors(tmp_path, monkeypatch):
    space = tmp_path / "space-data"
    assert curation.default_location({}, space_data=space) == Path.home() / ".local/share/open-dolly/curation.sqlite3"
    assert curation.default_location({"XDG_DATA_HOME": str(tmp_path / "xdg")}, space_data=space) == \
        tmp_path / "xdg/open-dolly/curation.sqlite3"
    space.mkdir()  # a Space with persistent storage
    assert curation.default_location({"XDG_DATA_HOME": str(tmp_path / "xdg")}, space_data=space) == \
        space / "open-dolly/curation.sqlite3"
    assert curation.resolve_location(None, {"DOLLY_CURATION_DB": "/x/y.db"}) == "/x/y.db"
    assert curation.resolve_location("/a.db", {"DOLLY_CURATION_DB": "/x/y.db"}) == "/a.db"  # the flag wins

    monkeypatch.setenv("DOLLY_CURATION_DB", str(tmp_path / "from-env.sqlite3"))
    with open_store(None) as store:
        assert store.location == str(tmp_path / "from-env.sqlite3")
    assert (tmp_path / "from-env.sqlite3").is_file()

    with pytest.raises(StoreError, match=r"--curation-db \(or DOLLY_CURATION_DB\): .* is a folder"):
        open_store(tmp_path)
    not_db = tmp_path / "notes.txt"
    not_db.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(StoreError, match="is not an SQLite database"):
        open_store(not_db)
    assert not_db.read_text().startswith("these are my notes")  # left as it was
    with pytest.raises(StoreError, match="cannot make the folder"):
        open_store(not_db / "sub" / "c.sqlite3")
    with pytest.raises(StoreError, match="takes a file path .* or a postgresql:// URL, got 'mysql://u:\\*\\*\\*@h/db'"):
        open_store("mysql://u:secret@h/db")
    with pytest.raises(StoreError, match=r"could not use the PostgreSQL database at postgresql://u:\*\*\*@.*Check the URL") as caught:
        open_store(f"postgresql://u:secret@/db?host={tmp_path}&port=1")  # no server there
    assert "secret" not in str(caught.value)
