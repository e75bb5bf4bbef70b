"""Issue 15 §1: the address bar is the app's state, and Back/Forward walk it (real Chromium).

Each step that changes the Explorer's view adds a history entry; Back and Forward restore the view
exactly, without reloading the page, and never leave the app while there is an earlier view of it.
The address follows the tab: `?tab=chat` on the Chat, `?tab=explorer` on the unfiltered Explorer.
"""
import pytest

from explorer.history import PUSH, REPLACE, tag, untag
from tests.browser import PHONE, WIDE, wait_idle
from tests.test_explorer_browser import (SEARCH, matches, open_page, search_for, shot, table_rows,  # noqa: F401
                                         wait_for_total, wait_summary)

CHECKED = "() => [...document.querySelectorAll('#explorer-categories input:checked')].map(i => i.name)"


def view(page) -> dict:
    """What the Explorer shows now, as a user would describe it."""
    return {"url": page.evaluate("() => location.search"),
            "categories": page.evaluate(CHECKED),
            "search": page.locator(SEARCH).first.input_value(),
            "summary": page.locator("#explorer-summary").inner_text(),
            "rows": table_rows(page),
            "opened": page.locator("#explorer-table tr.is-open").count()}


def wait_url(page, part: str) -> None:
    page.wait_for_function("(part) => location.search.includes(part)", arg=part)


def wait_view(page, expected: dict) -> None:
    """Wait until the page shows `expected` (a view() of earlier), then check all of it."""
    page.wait_for_function("(s) => location.search === s", arg=expected["url"])
    page.wait_for_function("(s) => document.querySelector('#explorer-summary')?.innerText === s",
                           arg=expected["summary"])
    wait_idle(page)
    assert view(page) == expected


def test_the_tag_says_how_the_address_takes_the_query():
    assert untag(tag("?tab=explorer&q=a:b", PUSH)) == (PUSH, "?tab=explorer&q=a:b")
    assert untag(tag("?tab=explorer", REPLACE)) == (REPLACE, "?tab=explorer")
    assert untag("?tab=explorer&q=push:x") == (REPLACE, "?tab=explorer&q=push:x")  # untagged: the first, replaced
    assert untag("") == (REPLACE, "")


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_back_and_forward_walk_the_views_without_a_reload(open_page, explorer_url, dolly_records, size):
    page = open_page(explorer_url, size)
    page.evaluate("() => { window.dollySamePage = true; }")  # gone if the page reloads
    start = page.evaluate("() => history.length")
    assert page.evaluate("() => location.search") == ""  # the Chat's address

    # The unfiltered Explorer has an address of its own, and a link to share.
    page.get_by_role("tab", name="Explorer").click()
    wait_url(page, "tab=explorer")
    assert page.evaluate("() => location.search") == "?tab=explorer"
    page.wait_for_function("() => (document.querySelector('#explorer-link textarea, #explorer-link input')?.value || '')"
                           ".endsWith('?tab=explorer')")
    wait_summary(page, r"page 1 of")
    views = [view(page)]

    # Each step is an entry: a category, a search (typing alone is none), Next, a row opened.
    if page.locator(".dolly-filters-toggle").is_visible():  # a phone: the filters are folded
        page.locator(".dolly-filters-toggle").click()
    page.locator('#explorer-categories input[name="closed_qa"]').check()
    wait_url(page, "category=closed_qa")
    wait_summary(page, r"^[\d,]+ matching rows")
    views.append(view(page))
    typed = page.evaluate("() => history.length")
    page.locator(SEARCH).first.fill("the")
    assert page.evaluate("() => history.length") == typed
    page.locator(SEARCH).first.press("Enter")
    wait_url(page, "q=the")
    wait_for_total(page, len(matches(dolly_records, "the", ["closed_qa"])))
    views.append(view(page))
    wait_idle(page)
    page.locator("#explorer-next").click()
    wait_url(page, "p=2")
    wait_summary(page, r"page 2 of")
    views.append(view(page))
    wait_idle(page)
    row = table_rows(page)[1]
    page.locator(f'#explorer-table tr[data-row="{row}"] .dolly-open').click()
    wait_url(page, f"row={row}")
    page.wait_for_selector("#explorer-table tr.is-open")
    views.append(view(page))
    assert page.evaluate("() => history.length") == start + len(views)
    shot(page, f"15-1-after-steps-{size['width']}")

    # Back walks them in reverse, each exactly as it was; then to the Chat, still the same page.
    for expected in reversed(views[:-1]):
        page.go_back()
        wait_view(page, expected)
    page.go_back()
    page.wait_for_function("() => location.search === ''")
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    # Forward walks them again.
    page.go_forward()
    page.get_by_role("tab", name="Explorer", selected=True).wait_for()
    wait_view(page, views[0])
    for expected in views[1:]:
        page.go_forward()
        wait_view(page, expected)
    assert page.evaluate("() => window.dollySamePage === true")
    shot(page, f"15-1-after-forward-{size['width']}")


def test_the_address_follows_the_tab(open_page, explorer_url):
    page = open_page(explorer_url + "?tab=explorer&category=open_qa")
    page.get_by_role("tab", name="Explorer", selected=True).wait_for()
    wait_summary(page, r"^[\d,]+ matching rows")
    wait_idle(page)
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_function("() => location.search === '?tab=chat'")
    # Back to the Explorer: its last view, as it was.
    page.get_by_role("tab", name="Explorer").click()
    page.wait_for_function("() => location.search === '?tab=explorer&category=open_qa'")
    page.go_back()
    page.wait_for_function("() => location.search === '?tab=chat'")
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    page.go_back()
    page.get_by_role("tab", name="Explorer", selected=True).wait_for()
    page.wait_for_function("() => location.search === '?tab=explorer&category=open_qa'")
    assert page.evaluate(CHECKED) == ["open_qa"]


def test_another_tab_has_an_address_of_its_own(open_page, explorer_url):
    page = open_page(explorer_url)
    page.get_by_role("tab", name="Contribute").click()
    page.wait_for_function("() => location.search === '?tab=contribute'")
    page.reload()
    page.get_by_role("tab", name="Contribute", selected=True).wait_for()
    page.go_back()
    page.wait_for_function("() => location.search === ''")
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
