"""Search that matches what people mean (issue 15 §5), in a real browser (Debian's Chromium via
Playwright) against a real launched app: an accent-blind search marks the record's own spelling, and
"best match" puts the most relevant rows first. Waits for states, never for time."""
import pandas as pd
import pytest

from explorer.query import Index
from tests.browser import page_opener, screenshot, wait_idle
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import write_jsonl

ROWS = "#explorer-table tr[data-row]"
SEARCH = "#explorer-search textarea, #explorer-search input"
RECORDS = [
    {"instruction": "Name a river.", "context": "", "category": "open_qa",
     "response": "The Nile is a long river in Africa, and " + "many more words about Egypt " * 12},
    {"instruction": "Tell me about zürich", "context": "", "response": "A city on a lake.", "category": "open_qa"},
    {"instruction": "What is a bank?", "context": "", "response": "A place for money.", "category": "open_qa"},
    {"instruction": "Tell me about the river", "context": "River, river, river: the river flows.",
     "response": "A river.", "category": "closed_qa"},
    {"instruction": "Rivers", "context": "", "response": "The river bank is where the river meets land.",
     "category": "open_qa"},
    {"instruction": "Where do rivers go?", "context": "", "response": "To the sea; one river, many streams.",
     "category": "brainstorming"},
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo = serve("--data", write_jsonl(tmp_path_factory.mktemp("data") / "search.jsonl", RECORDS), *NO_MODEL)
    yield demo.local_url
    demo.close()


@pytest.fixture
def explorer(browser, app_url):
    def ready(page):
        page.get_by_role("tab", name="Explorer").click()
        wait_for_summary(page, rf"^{len(RECORDS)} matching rows")

    with page_opener(browser, ready) as open_:
        yield open_(app_url)


def wait_for_summary(page, pattern: str) -> None:
    page.wait_for_function("(p) => new RegExp(p).test(document.querySelector('#explorer-summary')?.innerText || '')",
                           arg=pattern)


def search_for(page, text: str) -> None:
    wait_idle(page)
    box = page.locator(SEARCH).first
    box.fill(text)
    box.press("Enter")


def table_rows(page) -> list[int]:
    return [int(r) for r in page.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.row)")]


def test_zurich_finds_zurich_with_an_umlaut_and_marks_its_spelling(explorer):
    search_for(explorer, "Zurich")
    wait_for_summary(explorer, rf"^1 matching row of {len(RECORDS)} ")
    assert table_rows(explorer) == [1]
    assert explorer.locator(f"{ROWS} mark").all_inner_texts() == ["zürich"]
    screenshot(explorer, "explorer-search-accents")


def test_best_match_orders_rows_by_relevance(explorer):
    search_for(explorer, "river")
    in_dataset_order = [0, 3, 4, 5]
    wait_for_summary(explorer, rf"^{len(in_dataset_order)} matching rows")
    assert table_rows(explorer) == in_dataset_order

    wait_idle(explorer)
    explorer.locator("#explorer-sort input").first.click()
    explorer.get_by_role("option", name="best match").click()
    ranked = Index(pd.DataFrame(RECORDS)).select([], "river", sort="best match").rows.tolist()
    assert ranked[0] == 3 and ranked[-1] == 0 and sorted(ranked) == in_dataset_order  # all about rivers first
    explorer.wait_for_function("(r) => document.querySelector('#explorer-table tr[data-row]')?.dataset.row === String(r)",
                               arg=ranked[0])
    assert table_rows(explorer) == ranked
    assert not explorer.locator(".dolly-sort-note").count()
    screenshot(explorer, "explorer-best-match")

    # With no search there is nothing to rank by: dataset order, and the page says so.
    search_for(explorer, "")
    wait_for_summary(explorer, rf"^{len(RECORDS)} matching rows")
    explorer.wait_for_selector(".dolly-sort-note")
    assert "dataset order" in explorer.locator(".dolly-sort-note").inner_text()
    assert table_rows(explorer) == list(range(len(RECORDS)))
