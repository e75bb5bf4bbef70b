"""The Explorer's Quality filter in a real browser (Debian's Chromium via Playwright) against a real
launched app serving clean English records with planted defects (tests/signal_data.py): the filter
shows each signal's count, ticking "citations" leaves only the rows with citation markers, and the row
viewer lists the record's signals and underlines the marker. Waits for states, never for time."""
import re

import pytest

from explorer.loader import DatasetLoader
from explorer.signals import SIGNALS
from tests.browser import page_opener, screenshot, wait_idle
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import write_jsonl
from tests.signal_data import CITATION_MARKERS, planted_records

ROWS = "#explorer-table tr[data-row]"


@pytest.fixture(scope="module")
def planted_app(tmp_path_factory):
    records, truth = planted_records(n_clean=240, per_signal=6, seed=5)
    source = write_jsonl(tmp_path_factory.mktemp("planted") / "planted.jsonl", records)
    dataset = DatasetLoader(str(source)).start()
    demo = serve("--data", source, *NO_MODEL, dataset=dataset)
    yield demo.local_url, records, truth, dataset
    demo.close()


@pytest.fixture
def open_page(browser):
    with page_opener(browser, lambda page: page.get_by_role("tab", name="Explorer").wait_for()) as open_:
        yield open_


def table_rows(page) -> list[int]:
    return [int(r) for r in page.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.row)")]


def test_quality_filter_counts_ticking_and_highlights(open_page, planted_app):
    url, records, truth, dataset = planted_app
    page = open_page(url + "?tab=explorer")
    # The counts come once the signals are there (computed in the background after the load).
    page.wait_for_selector("#explorer-quality input:not([disabled])")
    assert dataset.quality.wait(120) and dataset.quality.state == "ready"
    counts = dataset.get().signal_counts(dataset.get().select())
    wait_idle(page)
    page.locator("#explorer-quality input").first.click()
    page.get_by_role("option", name=f"citations ({counts['citations']})").wait_for()
    text = " | ".join(page.get_by_role("option").all_inner_texts())
    for name in SIGNALS:
        shown = "not computed" if name == "too_long" else f"{counts[name]:,}"  # no tokenizer in the app
        assert f"{name} ({shown})" in text, text
    assert counts["citations"] == len(truth["citations"])
    # Pick "citations": only the rows with citation markers, each with its badge.
    page.get_by_role("option", name=f"citations ({counts['citations']})").click()
    page.keyboard.press("Escape")
    wanted = sorted(truth["citations"])
    page.wait_for_function("(t) => new RegExp(`^${t} matching rows`).test(document.querySelector('#explorer-summary')?.innerText || '')",
                           arg=str(len(wanted)))
    assert table_rows(page) == wanted[:20]
    badges = page.locator(f"{ROWS} .dolly-badge[data-signal=citations]")
    assert badges.count() == len(wanted[:20])
    page.wait_for_function("() => window.location.search.includes('quality=citations')")

    # Open the first: the row viewer lists its signals and underlines the marker.
    wait_idle(page)
    page.locator(ROWS).first.locator(".c-instruction").click()
    flag = page.locator("#explorer-row .dolly-flag[data-signal=citations]").first
    flag.wait_for()
    assert flag.inner_text() in CITATION_MARKERS
    listed = page.locator("#explorer-row .dolly-signals li[data-signal=citations]").inner_text()
    assert listed.startswith("citations") and SIGNALS["citations"][:30] in listed
    style = flag.evaluate("e => getComputedStyle(e).textDecorationLine + ' ' + getComputedStyle(e).textDecorationStyle")
    assert "underline" in style and "wavy" in style  # not the search's yellow mark
    screenshot(page, "explorer-quality-citations")

    # Signals per category, and what each signal means.
    cell = page.locator("#explorer-quality-chart tr[data-category=closed_qa] td[data-signal=citations]")
    expected = sum(1 for r in wanted if records[r]["category"] == "closed_qa")
    page.wait_for_function("(n) => document.querySelector('#explorer-quality-chart tr[data-category=closed_qa] "
                           "td[data-signal=citations]')?.innerText === String(n)", arg=expected)
    assert cell.inner_text() == str(expected)
    page.get_by_text("What the quality signals mean").click()
    assert SIGNALS["citations"][:40] in page.locator("#explorer-quality-legend").inner_text()


def test_quality_deep_link_opens_filtered(open_page, planted_app):
    url, records, truth, dataset = planted_app
    assert dataset.quality.wait(120)
    page = open_page(url + "?quality=citations,empty")
    wanted = sorted(truth["citations"] | truth["empty"])
    page.wait_for_function("(t) => new RegExp(`^${t} matching rows`).test(document.querySelector('#explorer-summary')?.innerText || '')",
                           arg=str(len(wanted)))
    assert table_rows(page) == wanted[:20]
    chosen = page.locator("#explorer-quality").inner_text()
    assert "citations" in chosen and "empty" in chosen, chosen
    assert re.search(r"quality=citations(%2C|,)empty", page.url)
