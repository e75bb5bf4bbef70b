"""The Explorer in a real browser (Debian's Chromium via Playwright) against a real launched app."""
import csv
import io
import re
from urllib.parse import quote

import pytest

import app
from tests.conftest import free_port

# The Chat tab loads its model in the background; a missing local folder fails at once, offline,
# instead of retrying the unreachable Hub. The Explorer does not need a model.
NO_MODEL = ["--model", "/nonexistent/dolly-model"]

SCREENSHOT = "/tmp/explorer-tab.png"


@pytest.fixture(scope="module")
def app_url(dolly_jsonl):
    args = app.parse_args(["--data", str(dolly_jsonl), *NO_MODEL])
    demo = app.build_app(args)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **app.launch_options(args))
    yield demo.local_url
    demo.close()


def summary_total(page) -> int:
    text = page.locator("#explorer-summary").inner_text()
    match = re.search(r"([\d,]+) matching rows", text)
    assert match, text
    return int(match.group(1).replace(",", ""))


def wait_for_total(page, predicate, what):
    for _ in range(100):
        try:
            if predicate(summary_total(page)):
                return summary_total(page)
        except AssertionError:
            pass
        page.wait_for_timeout(100)
    raise AssertionError(f"summary never showed {what}: {page.locator('#explorer-summary').inner_text()}")


def first_table_row(page) -> str:
    # Gradio 6's Dataframe draws rows as role=row divs (a hidden <table> only measures widths).
    return page.locator('#explorer-table [role=row][data-index="0"]').inner_text()


def test_filter_search_and_open_a_row(page, app_url, dolly_records):
    page.goto(app_url)
    page.get_by_role("tab", name="Explorer").click()
    page.wait_for_selector("#explorer-summary")
    assert wait_for_total(page, lambda n: n == 400, "400 rows") == 400

    page.locator('#explorer-categories input[name="summarization"]').check()
    summarization = sum(r["category"] == "summarization" for r in dolly_records)
    wait_for_total(page, lambda n: n == summarization, f"{summarization} summarization rows")
    page.wait_for_function("() => document.querySelector('#explorer-table [role=row][data-index=\"0\"]')?.innerText.includes('summarization')")

    search = page.locator("#explorer-search textarea, #explorer-search input").first
    search.fill("river")
    search.press("Enter")
    wanted = sum(r["category"] == "summarization" and any("river" in r[f].lower() for f in ("instruction", "context", "response"))
                 for r in dolly_records)
    assert 0 < wanted < summarization
    wait_for_total(page, lambda n: n == wanted, f"{wanted} matches")
    assert "summarization" in first_table_row(page)

    # Open a row: the whole record, with the search term marked, and "Try in chat" enabled.
    page.locator('#explorer-table [data-testid="cell-0-2"]').click()
    page.wait_for_selector("#explorer-row mark")
    record_view = page.locator("#explorer-row").inner_text()
    assert "Row " in record_view and "summarization" in record_view and "instruction" in record_view.lower()
    assert page.locator("#explorer-row mark").first.inner_text().lower() == "river"
    assert page.locator("#explorer-try-in-chat").is_enabled()

    # The address bar now holds the view (a deep link).
    page.wait_for_function("() => window.location.search.includes('row=')")
    assert "category=summarization" in page.url and "q=river" in page.url

    # Export the selection from the UI: a download link to a file of exactly these rows appears.
    page.get_by_text("Export the selection").click()
    page.locator("#explorer-format").get_by_text("csv").click()
    page.locator("#explorer-export").click()
    link = page.locator("#explorer-file a").first
    link.wait_for()
    assert f"dolly-{wanted}-rows" in page.locator("#explorer-file").inner_text()
    download = page.request.get(link.get_attribute("href"))
    assert download.ok
    exported = list(csv.DictReader(io.StringIO(download.text())))
    assert len(exported) == wanted and all(r["category"] == "summarization" for r in exported)

    page.locator("#explorer-row").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SCREENSHOT, full_page=True)


def test_a_deep_link_restores_the_view(page, app_url, dolly_records):
    row = next(i for i, r in enumerate(dolly_records) if r["category"] == "closed_qa" and "museum" in r["response"].lower())
    page.goto(f"{app_url}?category=closed_qa&q={quote('museum')}&row={row}")
    page.wait_for_selector("#explorer-row mark")
    wanted = sum(r["category"] == "closed_qa" and any("museum" in r[f].lower() for f in ("instruction", "context", "response"))
                 for r in dolly_records)
    wait_for_total(page, lambda n: n == wanted, f"{wanted} matches")
    assert page.locator("#explorer-search textarea, #explorer-search input").first.input_value() == "museum"
    assert f"Row {row}" in page.locator("#explorer-row").inner_text()
    assert page.locator('#explorer-categories input[name="closed_qa"]').is_checked()


def test_a_bad_regex_is_a_message(page, app_url):
    page.goto(app_url + "?tab=explorer")
    page.wait_for_selector("#explorer-summary")
    page.locator("#explorer-regex input[type=checkbox]").check()
    search = page.locator("#explorer-search textarea, #explorer-search input").first
    search.fill("(unclosed")
    search.press("Enter")
    page.wait_for_function("() => document.querySelector('#explorer-summary').innerText.includes('Invalid regular expression')")
