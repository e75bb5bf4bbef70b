"""The Explorer's sources (explorer/sources.py): the loaded dataset, the contributions and both, each with
its filters, quality signals and curation decisions, on a real SQLite store with real contributions."""
import uuid

import pandas as pd
import pytest

from dolly import contributions as contrib
from dolly.curation import curated, open_store
from explorer.loader import DatasetLoader
from explorer.query import Index, QueryError
from explorer.sources import BOTH, CONTRIBUTIONS, CONTRIBUTIONS_KEY, LOADED, Sources, key_of
from tests.dolly_data import make_records

WRITTEN = [
    {"instruction": "What is the capital of Peru?", "context": "", "response": "Lima is the capital of Peru.",
     "category": "open_qa"},
    {"instruction": "Name three rivers of Europe.", "context": "",
     "response": "The Danube, the Rhine and the Loire.", "category": "brainstorming"},
    {"instruction": "How tall is the tower?", "context": "The tower is 300 metres tall and was built in 1889.",
     "response": "It is 300 metres tall.", "category": "closed_qa"},
]


@pytest.fixture
def app_data(tmp_path):
    store = open_store(tmp_path / "store.sqlite3")
    dataset = DatasetLoader("test", load=lambda _: Index(pd.DataFrame(make_records(40, seed=3)))).start()
    assert dataset.wait(60) and dataset.state == "ready"
    saved = [contrib.save(store, record, key=str(uuid.uuid4()), author=f"writer{i}").contribution
             for i, record in enumerate(WRITTEN)]
    yield Sources(dataset, store), store, saved
    store.close()


def test_each_source_holds_its_records_and_both_says_where_each_comes_from(app_data):
    sources, store, saved = app_data
    loaded, mine, both = sources.get(LOADED), sources.get(CONTRIBUTIONS), sources.get(BOTH)
    assert loaded.index.num_rows == 40 and mine.index.num_rows == 3 and both.index.num_rows == 43
    first = mine.index.record(0)
    assert first["instruction"] == WRITTEN[0]["instruction"] and first["contribution"] == str(saved[0].id)
    assert first["author"] == "writer0" and first["source"] == "written"
    assert [both.index.record(r)["dataset"] for r in (0, 39, 40, 42)] == [LOADED, LOADED, CONTRIBUTIONS, CONTRIBUTIONS]
    assert both.index.record(42)["instruction"] == WRITTEN[2]["instruction"]
    # the same filters work on each: a search and a category
    assert mine.index.select(search="Peru").total == 1
    assert both.index.select(["closed_qa"], "tower").total == 1
    assert mine.index.counts == {"open_qa": 1, "brainstorming": 1, "closed_qa": 1}


def test_a_new_contribution_or_a_rejection_is_seen_on_the_next_request(app_data):
    sources, store, saved = app_data
    before = sources.get(CONTRIBUTIONS)
    assert sources.get(CONTRIBUTIONS) is before  # nothing changed: the same Index, not a rebuild
    contrib.save(store, {**WRITTEN[0], "instruction": "What is the capital of Chile?",
                         "response": "Santiago is the capital of Chile."}, key=str(uuid.uuid4()), author="late")
    after = sources.get(CONTRIBUTIONS)
    assert after is not before and after.index.num_rows == 4
    contrib.review(store, saved[0].id, "rejected", reviewer="rev", reason="copied")
    assert sources.get(CONTRIBUTIONS).index.num_rows == 3  # rejected records are left out, as in exports
    assert sources.get(BOTH).index.num_rows == 43


def test_decisions_on_a_contribution_follow_it_when_its_row_moves_and_show_in_both(app_data):
    sources, store, saved = app_data
    mine = sources.get(CONTRIBUTIONS)
    key, stored = mine.locate(2)
    assert (key, stored) == (CONTRIBUTIONS_KEY, saved[2].id)
    store.exclude(key, stored, 0, "off topic", author="ann")
    # the record's row moves when an earlier one is rejected; its decision stays with it
    contrib.review(store, saved[0].id, "rejected", reviewer="rev", reason="copied")
    moved = sources.get(CONTRIBUTIONS)
    assert moved.locate(1) == (CONTRIBUTIONS_KEY, saved[2].id)
    assert {row: s.status for row, s in moved.states(store).items()} == {1: "excluded"}
    both = sources.get(BOTH)
    assert {row: s.status for row, s in both.states(store).items()} == {41: "excluded"}
    assert both.counts(store) == {"excluded": 1}
    # a decision on the loaded dataset's row 5, made in "both", is the loaded dataset's decision
    assert both.locate(5) == (key_of(sources.get(LOADED).index), 5)
    store.edit(*both.locate(5), 0, {"response": "Edited in both."}, author="ann")
    assert sources.get(LOADED).states(store)[5].fields == {"response": "Edited in both."}
    assert both.states(store)[5].fields == {"response": "Edited in both."}
    # a curated export of "both": the edit applied, the excluded contribution gone, where each came from kept
    rows = both.index.select().rows
    table = curated(both.index.table(both.index.select()), both.states(store), rows=rows, column=True).to_pandas()
    assert len(table) == 41 and (table["dataset"] == CONTRIBUTIONS).sum() == 1
    assert "Edited in both." in set(table["response"]) and WRITTEN[2]["instruction"] not in set(table["instruction"])


def test_quality_signals_are_computed_for_the_contributions_too(app_data):
    sources, store, _ = app_data
    mine = sources.get(CONTRIBUTIONS)
    assert mine.quality.wait(120) and mine.quality.state == "ready"
    assert mine.index.signals is not None and mine.index.signals.num_rows == 3
    assert mine.index.select(quality=["empty"]).total == 0  # a filter by signal runs on them


def test_a_source_the_app_has_not_is_refused_naming_the_choices(app_data, tmp_path):
    sources, _, _ = app_data
    with pytest.raises(QueryError, match="source: one of 'loaded', 'contributions', 'both', got 'mine'"):
        sources.get("mine")
    without_store = Sources(sources.dataset, None)
    assert without_store.names == (LOADED,)
    with pytest.raises(QueryError, match="needs a contribution store"):
        without_store.get(CONTRIBUTIONS)
    assert sources.get("").name == LOADED and sources.get(None).name == LOADED
