"""The Explorer in a real browser (Debian's Chromium via Playwright) against a real launched app.

Every test waits for a state (a selector, a text, a value), never for time, so a busy machine only
makes it slower. Screenshots of the key states, at 1440×900 and 390×844, go to tests/screenshots/
(git ignores it) for anyone to look at.
"""
import csv
import io
import re
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from dolly.data import DataError
from explorer.loader import DatasetLoader, build_index
from tests.browser import PHONE, TIMEOUT_MS, WIDE, axe_violations, page_opener, screenshot, wait_idle
from tests.conftest import NO_MODEL, serve

ROWS = "#explorer-table tr[data-row]"
SEARCH = "#explorer-search textarea, #explorer-search input"


@pytest.fixture
def open_page(browser):
    """open_page(url, size=WIDE): a new page of that viewport size, at `url`, with the app drawn."""
    with page_opener(browser, lambda page: page.get_by_role("tab", name="Explorer").wait_for()) as open_:
        yield open_


def shot(page, name: str) -> Path:
    return screenshot(page, f"explorer-{name}")


def summary(page) -> str:
    return page.locator("#explorer-summary").inner_text()


def wait_summary(page, pattern: str) -> str:
    """Wait until the summary line matches the regular expression `pattern`; returns the line."""
    page.wait_for_function("(p) => new RegExp(p).test(document.querySelector('#explorer-summary')?.innerText || '')",
                           arg=pattern)
    return summary(page)


def summary_total(page) -> int:
    match = re.search(r"([\d,]+) matching rows", summary(page))
    assert match, summary(page)
    return int(match.group(1).replace(",", ""))


def wait_for_total(page, total: int) -> None:
    wait_summary(page, rf"^{total:,} matching rows".replace(",", "\\,"))


def search_for(page, text: str) -> None:
    box = page.locator(SEARCH).first
    box.fill(text)
    box.press("Enter")


def regex_search(page, pattern: str) -> None:
    """Search `pattern` as a regular expression: typed first, then the Regex box checked, so that one
    event carries both. Checking the box and then submitting the search sent two events, and under load
    the answer to the first could arrive last and be what the page shows (a red CI run)."""
    page.locator(SEARCH).first.fill(pattern)
    page.locator("#explorer-regex input[type=checkbox]").check()


def table_rows(page) -> list[int]:
    return [int(r) for r in page.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.row)")]


def matches(records, needle, categories=None) -> list[int]:
    return [i for i, r in enumerate(records) if (categories is None or r["category"] in categories)
            and any(needle in r[f].lower() for f in ("instruction", "context", "response"))]


# -- browse, search, open, export -----------------------------------------------------------------
def test_filter_search_and_open_a_row(open_page, explorer_url, dolly_records):
    page = open_page(explorer_url)
    page.get_by_role("tab", name="Explorer").click()
    wait_for_total(page, 400)

    page.locator('#explorer-categories input[name="summarization"]').check()
    summarization = sum(r["category"] == "summarization" for r in dolly_records)
    wait_for_total(page, summarization)
    page.wait_for_function("() => document.querySelector('#explorer-table tr[data-row] .c-cat')?.innerText === 'summarization'")

    search_for(page, "river")
    wanted = matches(dolly_records, "river", ["summarization"])
    assert 0 < len(wanted) < summarization
    wait_for_total(page, len(wanted))
    assert table_rows(page) == wanted[:20]

    # Open a row: the whole record, with the search term marked, and "Try in chat" enabled.
    wait_idle(page)
    page.locator(ROWS).first.locator(".c-instruction").click()
    page.wait_for_selector("#explorer-row mark")
    record_view = page.locator("#explorer-row").inner_text()
    assert f"Row {wanted[0]}" in record_view and "summarization" in record_view
    assert page.locator("#explorer-row mark").first.inner_text().lower() == "river"
    page.wait_for_function("() => !document.querySelector('#explorer-try-in-chat').disabled")

    # The address bar now holds the view (a deep link).
    page.wait_for_function("() => window.location.search.includes('row=')")
    assert "category=summarization" in page.url and "q=river" in page.url

    # Sorting with the mouse: the length becomes a column, the rows follow it.
    wait_idle(page)
    page.locator("#explorer-sort input").first.click()
    page.get_by_role("option", name="context length, shortest first").click()
    page.wait_for_function("() => document.querySelector('#explorer-table th.c-len')?.textContent === 'context length'")
    shortest = sorted(wanted, key=lambda i: len(dolly_records[i]["context"]))
    page.wait_for_function("(r) => document.querySelector('#explorer-table tr[data-row]')?.dataset.row === String(r)",
                           arg=shortest[0])
    assert table_rows(page) == shortest[:20]


def test_export_shows_the_whole_file_name_and_its_order(open_page, explorer_url, dolly_records):
    """Point 8: the file name is shown whole, and the panel says the file follows the table's sort."""
    page = open_page(explorer_url + "?tab=explorer&category=closed_qa&sort=" + quote("response length, longest first"))
    closed = [i for i, r in enumerate(dolly_records) if r["category"] == "closed_qa"]
    wait_for_total(page, len(closed))
    page.get_by_text("Export the selection").click()
    note = page.locator("#explorer-export-note")
    note.wait_for()
    assert f"{len(closed)} rows" in note.inner_text() and "table's order" in note.inner_text()
    assert "response length, longest first" in note.inner_text()
    page.locator("#explorer-format").get_by_text("csv").click()
    wait_idle(page)
    page.locator("#explorer-export").click()
    link = page.locator("#explorer-file a").first
    link.wait_for()
    name = f"dolly-{len(closed)}-rows.csv"
    assert name in re.sub(r"\s+", "", page.locator("#explorer-file").text_content())  # name, extension: two spans
    # Whole: no ellipsis, not cut off by its box.
    assert page.evaluate("""() => [...document.querySelectorAll('#explorer-file *')]
        .filter(e => e.childElementCount === 0 && e.textContent.includes('dolly-'))
        .every(e => e.scrollWidth <= e.clientWidth + 1 && getComputedStyle(e).textOverflow !== 'ellipsis')""")
    shot(page, "p8-export")
    download = page.request.get(link.get_attribute("href"))
    assert download.ok
    exported = list(csv.DictReader(io.StringIO(download.text())))
    lengths = [len(r["response"]) for r in exported]
    assert len(exported) == len(closed) and lengths == sorted(lengths, reverse=True)  # the table's order



def test_a_download_always_holds_what_the_panel_describes(open_page, explorer_url, dolly_records):
    """Issue 15 §4: the download offered the older file after the selection changed. It is cleared then."""
    page = open_page(explorer_url + "?tab=explorer&category=closed_qa")
    closed = [r for r in dolly_records if r["category"] == "closed_qa"]
    wait_for_total(page, len(closed))
    page.get_by_text("Export the selection").click()
    page.locator("#explorer-export").click()
    page.locator("#explorer-file a").first.wait_for()
    assert f"dolly-{len(closed)}-rows.jsonl" in re.sub(r"\s+", "", page.locator("#explorer-file").text_content())
    wait_idle(page)
    page.locator('#explorer-categories input[name="open_qa"]').check()
    both = [r for r in dolly_records if r["category"] in ("closed_qa", "open_qa")]
    wait_for_total(page, len(both))
    page.wait_for_selector("#explorer-file a", state="detached")  # the old file is no longer offered
    assert f"{len(both)} rows" in page.locator("#explorer-export-note").inner_text()
    wait_idle(page)
    page.locator("#explorer-export").click()
    page.wait_for_function("(name) => (document.querySelector('#explorer-file')?.textContent || '')"
                           ".replace(/\\s+/g, '').includes(name)", arg=f"dolly-{len(both)}-rows.jsonl")


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_open_record_moves_to_its_neighbours_and_closes_by_button_and_key(open_page, explorer_url, size):
    """Issue 15 §4: a close button, Escape to close, and buttons and keys for the previous/next row."""
    viewer = "#explorer-row" if size is WIDE else "#explorer-table .dolly-detail"
    page = open_page(explorer_url + "?tab=explorer&row=1", size)

    def wait_open(row):
        page.wait_for_selector(f"#explorer-table tr.is-open[data-row='{row}']")
        page.wait_for_function("([s, row]) => (document.querySelector(s)?.innerText || '').includes(`Row ${row} ·`)",
                               arg=[viewer, row])
        wait_idle(page)

    wait_open(1)
    page.locator(f"{viewer} [data-nav=next]").click()
    wait_open(2)
    page.locator(f"{viewer} [data-nav=previous]").click()
    wait_open(1)
    page.locator(f"{viewer} [data-nav=previous]").click()
    wait_open(0)
    page.wait_for_function("(s) => document.querySelector(`${s} [data-nav=previous]`)?.disabled === true", arg=viewer)
    page.keyboard.press("j")
    wait_open(1)
    page.keyboard.press("Escape")
    page.wait_for_selector("#explorer-table tr.is-open", state="detached")
    if size is WIDE:
        page.wait_for_function("() => document.querySelector('#explorer-row .dolly-hint') !== null")
        page.keyboard.press("k")  # nothing open: the keys do nothing
        assert page.locator("#explorer-table tr.is-open").count() == 0


def test_skip_buttons_and_a_visible_focus_for_keyboard_users(open_page, explorer_url):
    """Issue 15 §7: a skip to the table and to the pager (20 Tabs through row numbers otherwise), and the
    focus shows on every control (Gradio's checkboxes changed colour by a shade)."""
    page = open_page(explorer_url + "?tab=explorer")
    page.wait_for_selector("#explorer-table tr[data-row]")
    wait_idle(page)
    page.get_by_role("tab", name="Explorer").focus()
    for _ in range(len(page.get_by_role("tab").all())):  # past the tab buttons after it: the Explorer's first stop
        page.keyboard.press("Tab")
        if page.evaluate("() => !document.activeElement.matches('button[role=tab]')"):
            break
    skip = page.locator("#explorer-skip button")
    assert page.evaluate("() => document.activeElement.dataset.skip") == "#explorer-table .dolly-open"
    box = skip.bounding_box()
    assert box and box["width"] > 50 and box["y"] >= 0  # in sight once focused
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.classList.contains('dolly-open')")
    page.locator("#explorer-table .dolly-skip").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "explorer-next"
    # Focus shows: a 2 px outline on a category checkbox reached by the keyboard.
    page.locator('#explorer-categories input[name="open_qa"]').focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("() => { const s = getComputedStyle(document.activeElement); "
                            "return [document.activeElement.name, s.outlineStyle, s.outlineWidth]; }")
    assert outline == ["open_qa", "solid", "2px"], outline


def test_on_a_phone_the_filters_fold_and_the_first_rows_are_on_the_first_screen(open_page, explorer_url):
    """Issue 15 §4: "Filters (n)" on a phone, the pager never wraps Next alone, no disabled full-width bar."""
    page = open_page(explorer_url + "?tab=explorer", PHONE)
    page.wait_for_selector("#explorer-table tr[data-row]")
    wait_idle(page)
    assert not page.locator("#explorer-categories").is_visible()
    assert page.locator("#explorer-table tr[data-row]").first.bounding_box()["y"] < PHONE["height"]
    assert not page.locator("#explorer-try-in-chat").is_visible()
    toggle = page.locator(".dolly-filters-toggle")
    assert toggle.inner_text() == "Filters" and toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    page.locator("#explorer-categories").wait_for(state="visible")
    page.locator('#explorer-categories input[name="closed_qa"]').check()
    page.wait_for_function("() => document.querySelector('.dolly-filters-toggle').textContent === 'Filters (1)'")
    wait_idle(page)  # the filtered table and pager drawn: mid-update, a busy CI run measured the pager in two places
    boxes = [page.locator(s).bounding_box() for s in ("#explorer-previous", "#explorer-page", "#explorer-next")]
    assert max(b["y"] for b in boxes) < min(b["y"] + b["height"] for b in boxes), boxes  # side by side, one line
    assert boxes[2]["x"] + boxes[2]["width"] <= PHONE["width"]


def test_opening_a_row_does_not_reflow_the_table(open_page, explorer_url):
    page = open_page(explorer_url + "?tab=explorer")
    page.wait_for_selector("#explorer-table tr[data-row]")
    wait_idle(page)
    before = page.locator("#explorer-table table").bounding_box()
    page.locator('#explorer-table tr[data-row="3"] .dolly-open').click()
    page.wait_for_selector("#explorer-table tr.is-open")
    page.wait_for_function("() => (document.querySelector('#explorer-row')?.innerText || '').includes('Row 3')")
    after = page.locator("#explorer-table table").bounding_box()
    assert (after["x"], after["width"]) == (before["x"], before["width"])

# -- point 1: links with a page --------------------------------------------------------------------
@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_links_with_a_page_open_and_reload(open_page, explorer_url, size):
    # Links shared before the page moved to `p=` still open (Gradio owns `page=`).
    page = open_page(explorer_url + "?page=1", size)
    wait_summary(page, r"page 1 of 20")
    page = open_page(explorer_url + "?tab=explorer&page=2", size)
    wait_summary(page, r"showing 21–40 · page 2 of 20")
    assert "p=2" in page.url and "page=" not in page.url
    assert page.locator("#explorer-page input, #explorer-page textarea").first.input_value() == "2"
    # Next writes p=3 into the address bar; reloading keeps that page.
    wait_idle(page)
    page.locator("#explorer-next").click()
    wait_summary(page, r"page 3 of 20")
    page.wait_for_function("() => window.location.search.includes('p=3')")
    page.reload()
    wait_summary(page, r"page 3 of 20")
    assert table_rows(page) == list(range(40, 60))
    shot(page, "p1-reloaded-page-3")


# -- point 3: the page box -------------------------------------------------------------------------
def test_the_page_box_never_breaks_the_table(open_page, explorer_url):
    page = open_page(explorer_url + "?tab=explorer&p=3")
    wait_summary(page, r"page 3 of 20")
    box = page.locator("#explorer-page input, #explorer-page textarea").first
    note = page.locator("#explorer-page-note")
    cases = [  # typed, page shown, words in the note
        ("0", 1, "Pages start at 1"),
        ("7", 7, ""),
        ("", 7, "Type a page number"),
        ("-4", 1, "Pages start at 1"),
        ("3.5", 3, "whole numbers"),
        ("999", 20, "There are 20 pages"),
        ("abc", 20, "is not a page number"),
    ]
    for typed, shown, words in cases:
        wait_idle(page)
        box.fill(typed)
        box.press("Enter")
        wait_summary(page, rf"page {shown} of 20")
        if words:
            page.wait_for_function("(w) => document.querySelector('#explorer-page-note').innerText.includes(w)", arg=words)
        else:
            page.wait_for_function("() => document.querySelector('#explorer-page-note').innerText.trim() === ''")
        assert box.input_value() == str(shown)
        assert table_rows(page) == list(range((shown - 1) * 20, shown * 20)), typed
        assert not page.locator(".toast-body, .error").is_visible()
    assert "is not a page number" in note.inner_text()
    note.scroll_into_view_if_needed()
    shot(page, "p3-page-box-abc")


# -- point 4: an opened row shows where the user looks ---------------------------------------------
def in_viewport(page, selector: str) -> bool:
    return page.evaluate("""(s) => { const e = document.querySelector(s); if (!e) return false;
        const b = e.getBoundingClientRect(); return b.height > 0 && b.top < window.innerHeight && b.bottom > 0; }""",
                         selector)


def test_opening_a_row_on_a_wide_screen_shows_it_beside_the_table(open_page, explorer_url, dolly_records):
    page = open_page(explorer_url + "?tab=explorer")
    wait_for_total(page, 400)
    wait_idle(page)
    # A row far down the page: the record appears in the panel beside the table, in view.
    row = page.locator(ROWS).nth(15)
    row.scroll_into_view_if_needed()
    row.locator(".c-response").click()
    page.wait_for_function("() => document.querySelector('#explorer-row')?.innerText.includes('Row 15 ')")
    assert in_viewport(page, "#explorer-row .dolly-record")
    assert in_viewport(page, "#explorer-table tr[data-row='15']")
    table_box = page.locator("#explorer-table").bounding_box()
    panel_box = page.locator("#explorer-row").bounding_box()
    assert panel_box["x"] >= table_box["x"] + table_box["width"] - 1  # beside, not below
    assert page.locator("#explorer-table tr[data-row='15']").get_attribute("aria-current") == "true"
    assert not page.locator(".dolly-detail").is_visible()  # the in-table copy is for phones only
    shot(page, "p4-row-open")
    # Clicking the open row again closes it.
    wait_idle(page)
    page.locator("#explorer-table tr[data-row='15'] .c-category, #explorer-table tr[data-row='15'] .c-cat").first.click()
    page.wait_for_function("() => !document.querySelector('#explorer-table tr.is-open')")
    assert "Click a row" in page.locator("#explorer-row").inner_text()


def test_opening_a_row_on_a_phone_shows_it_under_the_row(open_page, explorer_url, dolly_records):
    page = open_page(explorer_url + "?tab=explorer", PHONE)
    wait_for_total(page, 400)
    wait_idle(page)
    row = page.locator(ROWS).nth(6)
    row.scroll_into_view_if_needed()
    row.locator(".c-instruction").click()
    detail = page.locator("#explorer-table tr.dolly-detail")
    detail.wait_for()
    # Right under the row it belongs to, in view, with the whole text and its own Try in chat.
    assert page.evaluate("() => document.querySelector('#explorer-table tr.is-open').nextElementSibling"
                         ".classList.contains('dolly-detail')")
    assert page.locator("#explorer-table tr.is-open").get_attribute("data-row") == "6"
    assert dolly_records[6]["instruction"] in detail.inner_text()
    assert in_viewport(page, "#explorer-table tr.dolly-detail")
    assert detail.locator("[data-action=try]").is_visible()
    shot(page, "p4-row-open")
    # Its own "Try in chat" does what the one beside the table does: over to the Chat tab.
    wait_idle(page)
    detail.locator("[data-action=try]").click()
    page.wait_for_function("() => document.querySelector('button[role=tab][aria-selected=true]')?.innerText.includes('Chat')")


# -- point 5: a table like the Hugging Face viewer's ------------------------------------------------
@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_table_reads_like_the_dataset_viewer(open_page, explorer_url, dolly_records, size):
    page = open_page(explorer_url + "?tab=explorer&q=river", size)
    wanted = matches(dolly_records, "river")
    wait_for_total(page, len(wanted))
    shot(page, "p5-table")
    # Proportional font, not the monospace of a code grid.
    font = page.evaluate("() => getComputedStyle(document.querySelector('#explorer-table td.c-instruction')).fontFamily")
    assert "mono" not in font.lower(), font
    # Categories never broken mid-word: one line each, whole.
    assert page.evaluate("""() => [...document.querySelectorAll('#explorer-table tr[data-row] .c-cat')].every(c =>
        getComputedStyle(c).whiteSpace === 'nowrap' && c.scrollWidth <= c.clientWidth + 1)""")
    # The search matches are marked in the cells.
    assert page.locator("#explorer-table mark").count() >= 10
    assert {m.lower() for m in page.locator("#explorer-table mark").all_inner_texts()} == {"river"}
    if size == WIDE:
        # More rows at once: at least 8 whole rows in the first screen.
        visible = page.evaluate("""() => [...document.querySelectorAll('#explorer-table tr[data-row]')]
            .filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length""")
        assert visible >= 8, visible
        # Columns sized to their content: the row number column is narrow, the texts get the room.
        widths = page.evaluate("""() => Object.fromEntries(['c-row', 'c-cat', 'c-instruction', 'c-context', 'c-response']
            .map(c => [c, document.querySelector('#explorer-table th.' + c).getBoundingClientRect().width]))""")
        widest_category = page.evaluate("""() => Math.max(...[...document.querySelectorAll('#explorer-table td.c-cat')]
            .map(c => { const r = document.createRange(); r.selectNodeContents(c); return r.getBoundingClientRect().width; }))""")
        assert widths["c-row"] < 70 and widths["c-cat"] < widest_category + 40, (widths, widest_category)
        assert min(widths["c-instruction"], widths["c-context"], widths["c-response"]) > widths["c-cat"], widths
    # Sorted by a length: that length is a column, longest first.
    page.goto(explorer_url + "?tab=explorer&sort=" + quote("response length, longest first"))
    page.wait_for_selector("#explorer-table th.c-len", state="attached")
    assert page.locator("#explorer-table th.c-len").text_content().strip() == "response length"
    lengths = [int(t.replace(",", "").split()[0]) for t in page.locator("#explorer-table td.c-len").all_inner_texts()]
    longest = sorted((len(r["response"]) for r in dolly_records), reverse=True)[:20]
    assert lengths == longest
    shot(page, "p5-sorted-by-length")


# -- point 6: charts of the current valid selection -------------------------------------------------
def charts_shown(page) -> bool:
    return page.evaluate("() => { const c = document.querySelector('#explorer-charts');"
                         " return !!c && c.offsetParent !== null && c.querySelectorAll('.vega-embed').length >= 4; }")


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_charts_follow_the_valid_selection(open_page, explorer_url, size):
    page = open_page(explorer_url + "?tab=explorer&q=river", size)
    page.wait_for_function("() => document.querySelectorAll('#explorer-charts .vega-embed').length >= 4")
    # The length histograms have readable, few bins (the tail shares one bar), in numeric order.
    page.locator("#explorer-charts").scroll_into_view_if_needed()
    shot(page, "p6-charts")
    empty = page.locator("#explorer-charts-empty")
    # A bad regex: no charts of the previous selection, a note saying why.
    wait_idle(page)
    regex_search(page, "(unclosed")
    wait_summary(page, "Invalid regular expression")
    page.wait_for_function("() => document.querySelector('#explorer-charts-empty')?.innerText.includes('not valid')")
    assert not charts_shown(page)
    empty.scroll_into_view_if_needed()
    shot(page, "p6-charts-bad-regex")
    # No rows: an empty state, not empty axes.
    wait_idle(page)
    search_for(page, "zzqqzz")
    wait_summary(page, "No matching rows")
    page.wait_for_function("() => document.querySelector('#explorer-charts-empty')?.innerText.includes('no rows match')")
    assert not charts_shown(page)
    assert "0.000000" not in page.locator("body").inner_text()
    shot(page, "p6-charts-empty")
    # A valid selection again: the charts come back.
    wait_idle(page)
    search_for(page, "museum")
    page.wait_for_function("() => { const c = document.querySelector('#explorer-charts');"
                           " return c && c.offsetParent !== null; }")
    page.wait_for_selector("#explorer-charts-empty", state="hidden")


# -- deep links ------------------------------------------------------------------------------------
def assert_museum_view_restored(page, dolly_records, row):
    """The view of the deep link `?category=closed_qa&q=museum&row=<row>` is on screen."""
    wanted = matches(dolly_records, "museum", ["closed_qa"])
    wait_for_total(page, len(wanted))
    assert page.locator(SEARCH).first.input_value() == "museum"
    assert f"Row {row}" in page.locator("#explorer-row").inner_text()
    assert page.locator('#explorer-categories input[name="closed_qa"]').is_checked()


def museum_row(dolly_records) -> int:
    return next(i for i, r in enumerate(dolly_records) if r["category"] == "closed_qa" and "museum" in r["response"].lower())


def test_a_deep_link_restores_the_view(open_page, explorer_url, dolly_records):
    row = museum_row(dolly_records)
    page = open_page(f"{explorer_url}?category=closed_qa&q={quote('museum')}&row={row}")
    page.wait_for_selector("#explorer-row mark")
    assert_museum_view_restored(page, dolly_records, row)


def test_a_bad_regex_is_a_message(open_page, explorer_url):
    page = open_page(explorer_url + "?tab=explorer")
    wait_for_total(page, 400)
    wait_idle(page)
    regex_search(page, "(unclosed")
    wait_summary(page, "Invalid regular expression")
    assert page.locator("#explorer-table .dolly-none").is_visible()


# -- point 13: accessibility and the keyboard ------------------------------------------------------
@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_no_serious_accessibility_violations(open_page, explorer_url, size):
    page = open_page(explorer_url + "?tab=explorer", size)
    wait_for_total(page, 400)
    page.wait_for_function("() => document.querySelectorAll('#explorer-charts .vega-embed').length >= 4")
    wait_idle(page)
    assert axe_violations(page) == []
    row = page.locator(ROWS).nth(2)
    number = row.get_attribute("data-row")
    row.locator(".c-instruction").click()
    page.locator(".dolly-record >> visible=true").first.wait_for()  # beside the table, or under the row on a phone
    # The Curate section is drawn for the record by an event of its own, with no progress shown (wait_idle
    # cannot see it): measured before it, its buttons were caught turning from disabled to enabled, mid-fade.
    page.wait_for_function("(n) => (document.querySelector('#explorer-curate-status')?.innerText || '')"
                           ".includes(`Row ${n}:`)", arg=number)
    wait_idle(page)
    assert axe_violations(page) == []


def assert_leaving_a_dropdown_unchanged_is_no_step(page, dropdown: str) -> None:
    """On page 2 with row 25 open, the focus goes into the `dropdown` and out with Tab, nothing
    chosen; then row 30 is opened. Gradio's Dropdown sends `input` on that blur: were it taken as a step,
    the view would go back to page 1, before or after row 30 opens, and the address would lose p=2."""
    page.wait_for_selector("#explorer-table tr.is-open[data-row='25']")
    wait_idle(page)
    page.locator(f"{dropdown} input").first.focus()
    page.keyboard.press("Tab")
    page.locator("#explorer-table tr[data-row='30'] .dolly-open").click()
    page.wait_for_function("() => document.querySelector('#explorer-row')?.innerText.includes('Row 30 ')")
    wait_idle(page)
    assert "page 2 of" in summary(page)
    page.wait_for_function("() => { const p = new URLSearchParams(location.search);"
                           " return p.get('p') === '2' && p.get('row') === '30'; }")


def test_leaving_the_sort_unchanged_keeps_the_page_and_the_open_row(open_page, explorer_url):
    page = open_page(explorer_url + "?tab=explorer&p=2&row=25")
    assert_leaving_a_dropdown_unchanged_is_no_step(page, "#explorer-sort")


def test_the_keyboard_alone_searches_sorts_pages_and_opens_rows(open_page, explorer_url, dolly_records):
    page = open_page(explorer_url + "?tab=explorer")
    wait_for_total(page, 400)
    wait_idle(page)
    page.locator(SEARCH).first.focus()
    page.keyboard.type("river")
    page.keyboard.press("Enter")
    wanted = matches(dolly_records, "river")
    wait_for_total(page, len(wanted))
    # The sort dropdown opens from the keyboard, and Tab closes it.
    sort = page.locator("#explorer-sort input").first
    sort.focus()
    page.keyboard.press("ArrowDown")
    options = page.locator("#explorer-sort [role=listbox]")
    options.wait_for()
    page.keyboard.press("Tab")
    options.wait_for(state="hidden")
    assert sort.get_attribute("aria-expanded") != "true"
    # ... and picks a sort with the arrow keys and Enter.
    sort.focus()
    active_id = "() => document.querySelector('#explorer-sort input').getAttribute('aria-activedescendant')"
    for _ in range(10):
        before = page.evaluate(active_id)
        page.keyboard.press("ArrowDown")
        options.wait_for()
        # The dropdown moves its active option asynchronously: wait for the move before reading it.
        page.wait_for_function(f"(before) => ({active_id})() !== before", arg=before)
        active = page.evaluate(f"() => document.getElementById(({active_id})())?.textContent.replace('✓', '').trim()")
        if active == "instruction length, longest first":
            break
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#explorer-table th.c-len')?.textContent === 'instruction length'")
    wanted = sorted(wanted, key=lambda i: -len(dolly_records[i]["instruction"]))  # stable: ties in dataset order
    # Paging from the page box.
    box = page.locator("#explorer-page input, #explorer-page textarea").first
    box.focus()
    box.fill("2")
    page.keyboard.press("Enter")
    wait_summary(page, r"page 2 of")
    # A row opens with Enter on its number button, and the focus stays on it.
    wait_idle(page)
    first = page.locator(ROWS).first
    first.locator(".dolly-open").focus()
    page.keyboard.press("Enter")
    row = wanted[20]
    page.wait_for_function("(r) => document.querySelector('#explorer-row')?.innerText.includes('Row ' + r + ' ')", arg=row)
    page.wait_for_function("() => document.activeElement?.classList.contains('dolly-open')")
    assert page.evaluate("() => document.activeElement.closest('tr').dataset.row") == str(row)
    # Export: open the panel, pick a format and export, all from the keyboard.
    accordion = page.locator("#explorer-export-panel button, #explorer-export-panel [role=button]").first
    accordion.focus()
    page.keyboard.press("Enter")
    page.locator("#explorer-export").wait_for()
    parquet = page.locator("#explorer-format input[value=parquet]")
    parquet.wait_for(state="visible")
    wait_idle(page)  # the panel opens with an animation: focus what is there once it has settled
    parquet.focus()
    page.wait_for_function("() => document.activeElement?.matches('#explorer-format input[value=parquet]')")
    page.keyboard.press("Space")
    expect(parquet).to_be_checked(timeout=TIMEOUT_MS)
    page.locator("#explorer-export").focus()
    page.keyboard.press("Enter")
    page.locator("#explorer-file a").first.wait_for()
    assert f"dolly-{len(wanted)}-rows" in page.locator("#explorer-file").text_content()


# -- point 7: loading and failing ------------------------------------------------------------------
def launch_with(dataset, source):
    return serve("--data", source, *NO_MODEL, dataset=dataset)


def gated_loader(source, release, load=build_index):
    def gated(path):
        assert release.wait(120), "the test never released the load"
        return load(path)
    return DatasetLoader(str(source), load=gated)


CONTROLS = ["#explorer-search textarea, #explorer-search input", "#explorer-search-button", "#explorer-sort input",
            "#explorer-page textarea, #explorer-page input", "#explorer-next", "#explorer-previous", "#explorer-export"]


def disabled(page, selector: str) -> bool:
    return page.evaluate("(s) => { const e = document.querySelector(s); return !!e && (e.disabled || e.readOnly"
                         " || e.getAttribute('aria-disabled') === 'true'); }", selector)


def test_a_deep_link_opened_while_loading_restores_once_the_data_is_there(open_page, dolly_jsonl, dolly_records):
    release = threading.Event()
    dataset = gated_loader(dolly_jsonl, release)
    demo = launch_with(dataset, dolly_jsonl)
    try:
        row = museum_row(dolly_records)
        page = open_page(f"{demo.local_url}?category=closed_qa&q={quote('museum')}&row={row}")
        # The link is about the Explorer, so its tab opens at once, saying the data is on its way,
        # and the controls are off, saying why.
        page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText.includes('Loading dataset')")
        loading = page.locator("#explorer-loading").inner_text()
        assert str(dolly_jsonl) in loading and "turn on once the data is there" in loading
        page.wait_for_function("() => /\\(\\d+ s so far\\)/.test(document.querySelector('#explorer-loading').innerText)")
        page.get_by_text("Export the selection").click()  # its controls are drawn once it is open
        page.locator("#explorer-export").wait_for()
        for selector in CONTROLS:
            assert disabled(page, selector), selector
        shot(page, "p7-loading")
        assert dataset.state == "loading"
        release.set()
        # The polling timer finds the data and restores the linked view: filter, search, row, counts.
        page.wait_for_selector("#explorer-row mark")
        assert_museum_view_restored(page, dolly_records, row)
        for selector in CONTROLS:
            if selector not in ("#explorer-previous", "#explorer-next"):
                page.wait_for_function("(s) => !document.querySelector(s).disabled", arg=selector)
        # The pager's buttons are on where they can move: page 1 of 1 here.
        page.wait_for_function("() => document.querySelector('#explorer-previous').disabled")
        counts = page.locator("#explorer-categories").inner_text()
        closed = sum(r["category"] == "closed_qa" for r in dolly_records)
        assert f"closed_qa ({closed:,})" in counts
        page.wait_for_selector("#explorer-loading", state="hidden")
        assert not page.locator("#explorer-link-query").is_visible()  # the link's carrier stays hidden
        # Charts of the restored selection are drawn too.
        page.wait_for_function("() => document.querySelectorAll('#explorer-charts .vega-embed').length >= 4")
        # It stays filled: a later tick does not reset the view the user changes.
        wait_idle(page)
        page.locator('#explorer-categories input[name="open_qa"]').check()
        both = matches(dolly_records, "museum", ["closed_qa", "open_qa"])
        wait_for_total(page, len(both))
        # Two timer periods later (the timer is off once filled), the user's view is still there.
        page.wait_for_function("() => new Promise(done => setTimeout(() => done(true), 2500))")
        assert summary_total(page) == len(both)
    finally:
        release.set()
        demo.close()


def wait_explorer_selected(page) -> None:
    page.wait_for_function("() => [...document.querySelectorAll('button[role=tab]')]"
                           ".some(t => t.innerText.includes('Explorer') && t.getAttribute('aria-selected') === 'true')")


def test_a_load_that_fails_shows_plain_words_and_a_deep_link_still_opens_the_tab(open_page, tmp_path):
    release = threading.Event()
    missing = tmp_path / "gone.jsonl"
    demo = launch_with(gated_loader(missing, release), missing)
    try:
        page = open_page(demo.local_url + "?tab=explorer&q=river")
        page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText.includes('Loading dataset')")
        release.set()
        page.wait_for_function("() => document.querySelector('#explorer-error')?.innerText.includes('Data file not found')")
        error = page.locator("#explorer-error").inner_text()
        assert "Could not load the dataset" in error
        assert not re.search(r"\b[A-Z]\w+(Error|Exception)\b", error), error  # no exception class names
        page.wait_for_selector("#explorer-table", state="hidden")
        wait_explorer_selected(page)
        shot(page, "p7-failed")
        # Opened after it failed: the deep link still lands on the Explorer and its message.
        page = open_page(demo.local_url + "?tab=explorer&q=river")
        wait_explorer_selected(page)
        page.wait_for_function("() => document.querySelector('#explorer-error')?.innerText.includes('Data file not found')")
    finally:
        release.set()
        demo.close()


def test_a_hub_failure_is_worded_without_exception_names(open_page, tmp_path):
    """A Hub dataset that cannot be reached: plain words (what, why, what to do), no class names."""
    def unreachable(path):
        raise DataError("Could not load dataset 'databricks/databricks-dolly-15k' from the Hugging Face Hub "
                        "(ConnectionError: Couldn't reach 'databricks/databricks-dolly-15k' on the Hub "
                        "(LocalEntryNotFoundError)). Download it once (`hf download databricks/databricks-dolly-15k "
                        "--repo-type dataset --local-dir ./databricks-dolly-15k`) and load it from a file: "
                        "python app.py --data path/to/databricks-dolly-15k.jsonl")
    release = threading.Event()
    release.set()
    demo = launch_with(gated_loader("databricks/databricks-dolly-15k", release, unreachable), "databricks/databricks-dolly-15k")
    try:
        page = open_page(demo.local_url + "?tab=explorer")
        wait_explorer_selected(page)
        page.wait_for_function("() => document.querySelector('#explorer-error')?.innerText.includes('Could not load')")
        error = page.locator("#explorer-error").inner_text()
        assert "Could not load" in error and "--data" in error
        assert "LocalEntryNotFoundError" not in error and "ConnectionError" not in error
        # The command to run is shown as code, without the message's backticks.
        assert "`" not in error
        assert page.locator("#explorer-error code").first.inner_text().startswith("hf download databricks/")
    finally:
        demo.close()
