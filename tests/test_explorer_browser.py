"""The Explorer in a real browser (Debian's Chromium via Playwright) against a real launched app."""
import csv
import io
import re
import threading
from urllib.parse import quote

import pytest

import app
from explorer.loader import DatasetLoader, build_index
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


def assert_museum_view_restored(page, dolly_records, row):
    """The view of the deep link `?category=closed_qa&q=museum&row=<row>` is on screen."""
    wanted = sum(r["category"] == "closed_qa" and any("museum" in r[f].lower() for f in ("instruction", "context", "response"))
                 for r in dolly_records)
    wait_for_total(page, lambda n: n == wanted, f"{wanted} matches")
    assert page.locator("#explorer-search textarea, #explorer-search input").first.input_value() == "museum"
    assert f"Row {row}" in page.locator("#explorer-row").inner_text()
    assert page.locator('#explorer-categories input[name="closed_qa"]').is_checked()


def test_a_deep_link_restores_the_view(page, app_url, dolly_records):
    row = next(i for i, r in enumerate(dolly_records) if r["category"] == "closed_qa" and "museum" in r["response"].lower())
    page.goto(f"{app_url}?category=closed_qa&q={quote('museum')}&row={row}")
    page.wait_for_selector("#explorer-row mark")
    assert_museum_view_restored(page, dolly_records, row)


def test_a_bad_regex_is_a_message(page, app_url):
    page.goto(app_url + "?tab=explorer")
    page.wait_for_selector("#explorer-summary")
    page.locator("#explorer-regex input[type=checkbox]").check()
    search = page.locator("#explorer-search textarea, #explorer-search input").first
    search.fill("(unclosed")
    search.press("Enter")
    page.wait_for_function("() => document.querySelector('#explorer-summary').innerText.includes('Invalid regular expression')")


def launch_with(dataset, source):
    args = app.parse_args(["--data", str(source), *NO_MODEL])
    demo = app.build_app(args, dataset=dataset)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **app.launch_options(args))
    return demo


def gated_loader(source, release):
    def load(path):
        assert release.wait(60), "the test never released the load"
        return build_index(path)
    return DatasetLoader(str(source), load=load)


def test_a_deep_link_opened_while_loading_restores_once_the_data_is_there(page, dolly_jsonl, dolly_records):
    release = threading.Event()
    dataset = gated_loader(dolly_jsonl, release)
    demo = launch_with(dataset, dolly_jsonl)
    try:
        row = next(i for i, r in enumerate(dolly_records) if r["category"] == "closed_qa" and "museum" in r["response"].lower())
        page.goto(f"{demo.local_url}?category=closed_qa&q={quote('museum')}&row={row}")
        # The link is about the Explorer, so its tab opens at once, saying the data is on its way.
        page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText.includes('Loading dataset')")
        assert str(dolly_jsonl) in page.locator("#explorer-loading").inner_text()
        page.wait_for_function("() => /\\(\\d+ s so far\\)/.test(document.querySelector('#explorer-loading').innerText)")
        assert dataset.state == "loading"
        release.set()
        # The polling timer finds the data and restores the linked view: filter, search, row, counts.
        page.wait_for_selector("#explorer-row mark")
        assert_museum_view_restored(page, dolly_records, row)
        counts = page.locator("#explorer-categories").inner_text()
        closed = sum(r["category"] == "closed_qa" for r in dolly_records)
        assert f"closed_qa ({closed:,})" in counts
        page.wait_for_selector("#explorer-loading", state="hidden")
        assert not page.locator("#explorer-link-query").is_visible()  # the link's carrier stays hidden
        # Charts of the restored selection are drawn too.
        page.wait_for_function("() => document.querySelectorAll('.vega-embed, canvas').length > 0")
        # It stays filled: a later tick does not reset the view the user changes.
        page.locator('#explorer-categories input[name="open_qa"]').check()
        both = sum(r["category"] in ("closed_qa", "open_qa") and any("museum" in r[f].lower() for f in ("instruction", "context", "response"))
                   for r in dolly_records)
        wait_for_total(page, lambda n: n == both, f"{both} matches")
        page.wait_for_timeout(2500)
        assert summary_total(page) == both
    finally:
        release.set()
        demo.close()


def test_a_load_that_fails_while_the_page_is_open_shows_the_error(page, tmp_path):
    release = threading.Event()
    missing = tmp_path / "gone.jsonl"
    demo = launch_with(gated_loader(missing, release), missing)
    try:
        page.goto(demo.local_url + "?tab=explorer")
        page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText.includes('Loading dataset')")
        release.set()
        page.wait_for_function("() => document.querySelector('#explorer-error')?.innerText.includes('Data file not found')")
        assert "Could not load the dataset" in page.locator("#explorer-error").inner_text()
        page.wait_for_selector("#explorer-table", state="hidden")
    finally:
        release.set()
        demo.close()
