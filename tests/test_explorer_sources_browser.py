"""Issue 17 §3 in a real browser and through gradio_client: the Explorer's "Records" choice shows the
loaded dataset, the contributions or both, with the same search, curation, links, history and export;
/explore and /export take an optional `source`. One app (real Chromium, a real SQLite store) for the module."""
import json
import uuid

import pytest
from gradio_client import Client

from dolly import contributions as contrib
from dolly.curation import open_store
from tests.browser import wait_idle
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import make_records, write_jsonl
from tests.test_explorer_browser import (assert_leaving_a_dropdown_unchanged_is_no_step, open_page, shot,  # noqa: F401
                                         table_rows, wait_summary)
from tests.test_explorer_curation_browser import MESSAGE, STATUS, wait_text

LOADED_ROWS = 30
WRITTEN = [
    {"instruction": "Which river flows through Vienna?", "context": "", "response": "The Danube flows through Vienna.",
     "category": "open_qa"},
    {"instruction": "Summarise the passage about the lighthouse.",
     "context": "The lighthouse was built in 1902 and guided ships for eighty years before it was automated.",
     "response": "A 1902 lighthouse guided ships for eighty years, then was automated.", "category": "summarization"},
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    data = write_jsonl(folder / "team.jsonl", make_records(LOADED_ROWS, seed=17))
    db = folder / "store.sqlite3"
    store = open_store(db)  # another connection to the app's store, as a second replica would hold
    for i, record in enumerate(WRITTEN):
        contrib.save(store, record, key=str(uuid.uuid4()), author=f"writer{i}")
    demo = serve("--data", data, *NO_MODEL, "--curation-db", db)
    yield demo.local_url, store
    demo.close()
    store.close()


def choose(page, label: str) -> None:
    wait_idle(page)
    page.locator("#explorer-source input").click()
    page.get_by_role("option", name=label, exact=True).click()


def test_the_api_reads_each_source_and_calls_without_it_are_unchanged(app):
    url, _ = app
    client = Client(url, verbose=False)
    rows, total = client.predict([], "", 1, api_name="/explore")  # a call from before `source`: the loaded data
    assert total == LOADED_ROWS
    rows, total = client.predict([], "Danube", 1, [], "contributions", api_name="/explore")
    assert total == 1 and rows[0]["instruction"] == WRITTEN[0]["instruction"] and rows[0]["author"] == "writer0"
    rows, total = client.predict(["summarization"], "lighthouse", 1, [], "both", api_name="/explore")
    assert total == 1 and rows[0]["dataset"] == "contributions" and rows[0]["row"] >= LOADED_ROWS
    with pytest.raises(Exception, match="source: one of 'loaded', 'contributions', 'both', got 'everything'"):
        client.predict([], "", 1, [], "everything", api_name="/explore")
    path = client.predict([], "", "jsonl", "contributions", api_name="/export")
    exported = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert [r["instruction"] for r in exported] == [r["instruction"] for r in WRITTEN]


def test_leaving_the_records_box_unchanged_keeps_the_page_and_the_open_row(app, open_page):
    url, _ = app
    page = open_page(f"{url}?tab=explorer&source=both&p=2&row=25")
    assert_leaving_a_dropdown_unchanged_is_no_step(page, "#explorer-source")


def test_pick_the_contributions_curate_one_see_both_go_back_and_export(app, open_page, tmp_path):
    url, store = app
    page = open_page(f"{url}?tab=explorer")
    wait_summary(page, rf"\b{LOADED_ROWS} matching rows of {LOADED_ROWS}\b")

    choose(page, "Contributions")
    wait_summary(page, r"\b2 matching rows of 2\b")
    page.wait_for_function("() => new URLSearchParams(location.search).get('source') === 'contributions'")
    assert table_rows(page) == [0, 1]
    assert "Which river flows through Vienna?" in page.locator("#explorer-table").inner_text()
    # the same search works on them
    page.locator("#explorer-search input").fill("lighthouse")
    page.locator("#explorer-search input").press("Enter")
    wait_summary(page, r"\b1 matching row of 2\b")
    assert table_rows(page) == [1]

    # A record written while the page is open shows on the next step.
    contrib.save(store, {"instruction": "Name a bird that cannot fly.", "context": "",
                         "response": "The ostrich cannot fly.", "category": "open_qa"},
                 key=str(uuid.uuid4()), author="late")
    wait_idle(page)
    page.locator("#explorer-search input").fill("")
    page.locator("#explorer-search input").press("Enter")
    wait_summary(page, r"\b3 matching rows of 3\b")

    # Curate a contribution: excluded with a reason, it leaves the curated view.
    wait_idle(page)
    page.locator("#explorer-table tr[data-row='0'] .dolly-open").click()
    wait_text(page, STATUS, "Row 0: not reviewed yet")
    wait_text(page, "#explorer-row", "writer0")  # who wrote it, shown with the record
    page.wait_for_function("() => !document.body.innerText.includes('computing quality signals')")
    wait_idle(page)
    page.locator("#explorer-curate-reason input").fill("too short to teach anything")
    page.locator("#explorer-curate-exclude").click()
    wait_text(page, STATUS, "Row 0: excluded: too short to teach anything")
    wait_text(page, MESSAGE, "Saved: row 0 excluded")
    wait_summary(page, r"\b2 matching rows of 3\b")
    shot(page, "17-3-contributions")

    # Both: the loaded records, then the contributions (the excluded one hidden there too).
    choose(page, "Both")
    wait_summary(page, rf"\b{LOADED_ROWS + 2} matching rows of {LOADED_ROWS + 3}\b")
    page.wait_for_function("() => new URLSearchParams(location.search).get('source') === 'both'")
    page.locator("#explorer-search input").fill("ostrich")
    page.locator("#explorer-search input").press("Enter")
    wait_summary(page, rf"\b1 matching row of {LOADED_ROWS + 3}\b")
    assert table_rows(page) == [LOADED_ROWS + 2]
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'ostrich'")  # the step is in history

    # Back: both as it was, then the contributions as they were.
    wait_idle(page)
    page.go_back()
    page.wait_for_function("() => new URLSearchParams(location.search).get('source') === 'both' "
                           "&& !new URLSearchParams(location.search).get('q')")
    wait_summary(page, rf"\b{LOADED_ROWS + 2} matching rows of {LOADED_ROWS + 3}\b")  # restored: the next step
    wait_idle(page)
    page.go_back()
    page.wait_for_function("() => new URLSearchParams(location.search).get('source') === 'contributions'")
    wait_summary(page, r"\b2 matching rows of 3\b")
    assert page.locator("#explorer-source input").input_value() == "Contributions"

    # A link to a contribution in "both" opens it, on a fresh page.
    link = open_page(f"{url}?tab=explorer&source=both&row={LOADED_ROWS + 1}")
    wait_text(link, STATUS, f"Row {LOADED_ROWS + 1}: not reviewed yet")
    wait_text(link, "#explorer-row", "lighthouse")
    assert link.locator("#explorer-source input").input_value() == "Both"

    # The curated export of both: the loaded records and two contributions, each saying where it comes from.
    wait_idle(link)
    link.get_by_text("Export the selection").click()
    with link.expect_download() as download:
        link.locator("#explorer-export").click()
        link.locator("#explorer-file a[download]").first.click()
    exported = tmp_path / "both.jsonl"
    download.value.save_as(exported)
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(rows) == LOADED_ROWS + 2
    assert [r["dataset"] for r in rows].count("contributions") == 2
    assert WRITTEN[0]["instruction"] not in {r["instruction"] for r in rows}  # excluded
