"""Issue 17 §2/§4 in a real browser: the Contribute tab. A category's guideline and examples; a bad record
names the field; the unsaved draft survives a reload (browser storage); a double-click on Save stores one
record; answering someone else's question; the leaderboard counts it. Real Chromium, real app, a real
SQLite store (its own file per test)."""
import uuid
from pathlib import Path

import pytest

from dolly import contributions as contrib
from dolly.curation import open_store
from tests.browser import wait_idle
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import make_records, write_jsonl
from tests.test_explorer_browser import open_page  # noqa: F401

PASSAGE = ("The Danube is the second-longest river in Europe. It flows through ten countries, among them "
           "Austria, whose capital Vienna lies on its banks, and it ends in the Black Sea.")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "team.jsonl", make_records(60, seed=17))


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text])


def wait_value(page, selector: str, value: str) -> None:
    page.wait_for_function("([s, v]) => document.querySelector(s)?.value === v", arg=[selector, value])


def open_contribute(open_page, url: str):
    page = open_page(url)
    select_tab(page)
    return page


def select_tab(page) -> None:
    """The Contribute tab: clicked until it shows (a click before the page's scripts are up does nothing)."""
    page.wait_for_function("""() => {
        const notice = document.querySelector('#contribute-notice');
        if (notice && notice.offsetParent && notice.innerText.includes('dolly-15k')) return true;
        document.querySelector('button[role=tab][data-tab-id="contribute"]')?.click();
        return false;
    }""", polling=500)
    wait_idle(page)


def wait_row(page, selector: str, cells: list) -> None:
    """A row of the table at `selector` with exactly these cells."""
    page.wait_for_function("""([s, want]) => Array.from(document.querySelectorAll(s + ' tr')).some(
        (row) => Array.from(row.cells).map((c) => c.innerText.trim()).join('|') === want)""",
                           arg=[selector, "|".join(map(str, cells))])


def choose(page, category: str) -> None:
    page.locator("#contribute-category input").click()
    page.get_by_role("option", name=category, exact=True).click()


def test_write_check_reload_double_click_answer_and_leaderboard(open_page, data, tmp_path):
    db = tmp_path / "contributions.sqlite3"
    with open_store(db) as store:  # someone else left a question to answer
        question = contrib.save(store, {"instruction": "Which sea does the Danube flow into?", "category": "open_qa"},
                                key=str(uuid.uuid4()), author="zoe").contribution
    demo = serve("--data", data, *NO_MODEL, "--curation-db", db)
    try:
        page = open_contribute(open_page, demo.local_url)
        wait_text(page, "#contribute-notice", "Contributions are anonymous")
        choose(page, "closed_qa")
        wait_text(page, "#contribute-guideline", "Closed QA: write a question")
        wait_text(page, "#contribute-guideline", "Example 2.")

        # a bad record: the form names the field, before and on saving
        page.locator("#contribute-instruction textarea").fill("Which city on the Danube is a capital?")
        wait_text(page, "#contribute-feedback", "context")
        wait_text(page, "#contribute-feedback", "closed_qa needs the reference passage")
        wait_idle(page)
        page.locator("#contribute-save").click()
        wait_text(page, "#contribute-message", "Not saved.")
        wait_text(page, "#contribute-message", "context: closed_qa needs the reference passage")

        # the unsaved draft survives a reload
        page.locator("#contribute-context textarea").fill(PASSAGE)
        page.locator("#contribute-response textarea").fill("Vienna, the capital of Austria.")
        wait_idle(page)
        page.wait_for_function("() => !(document.querySelector('#contribute-feedback')?.innerText || '').includes('⛔')")
        assert page.evaluate("() => location.search") == "?tab=contribute"  # the tab's own address
        page.reload()
        # The address opens the Contribute tab again (explorer/history.py).
        page.get_by_role("tab", name="Contribute", selected=True).wait_for()
        select_tab(page)
        wait_value(page, "#contribute-instruction textarea", "Which city on the Danube is a capital?")
        wait_value(page, "#contribute-context textarea", PASSAGE)
        wait_value(page, "#contribute-response textarea", "Vienna, the capital of Austria.")
        wait_value(page, "#contribute-category input", "closed_qa")
        wait_idle(page)

        # a double-click on Save stores one record
        page.locator("#contribute-save").dblclick()
        wait_text(page, "#contribute-message", "Saved")
        wait_value(page, "#contribute-instruction textarea", "")
        wait_idle(page)
        with open_store(db) as store:
            mine = [c for c in contrib.contributions(store) if c.author == "anonymous"]
        assert [(c.instruction, c.context, c.response, c.category) for c in mine] == \
            [("Which city on the Danube is a capital?", PASSAGE, "Vienna, the capital of Austria.", "closed_qa")]
        wait_row(page, "#contribute-leaderboard", [1, "anonymous", 1, 0, 0, "closed_qa 1"])

        # answer someone else's question
        page.get_by_text("Answer someone else's question").click()
        page.locator("#contribute-show-question").click()
        wait_text(page, "#contribute-question", f"Question #{question.id}")
        wait_text(page, "#contribute-question", "Which sea does the Danube flow into?")
        page.locator("#contribute-answer textarea").fill("The Black Sea.")
        wait_idle(page)
        page.locator("#contribute-answer-save").click()
        wait_text(page, "#contribute-answer-message", f"Saved your answer to question #{question.id}")
        wait_row(page, "#contribute-leaderboard", [1, "anonymous", 2, 0, 0, "closed_qa 1, open_qa 1"])
        with open_store(db) as store:
            answers = [c for c in contrib.contributions(store) if c.source == "answer"]
        assert [(c.answers, c.response, c.author) for c in answers] == [(question.id, "The Black Sea.", "anonymous")]
    finally:
        demo.close()
