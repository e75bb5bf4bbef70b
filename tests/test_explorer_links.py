"""Deep links use `p=` for the page (Gradio owns `page=`), and links shared with `page=N` still open."""
import httpx
import pytest

from explorer.links import build_query, legacy_page_redirect, parse_query


def test_the_page_travels_as_p():
    query = build_query(["closed_qa"], "river", False, "dataset order", 3)
    assert "p=3" in query and "page=" not in query
    assert parse_query(query).page == 3
    assert "p=" not in build_query(page=1)  # page 1 is the default, left out


@pytest.mark.parametrize("query, expected", [
    ("page=1", "?p=1"),
    ("tab=explorer&page=2", "?tab=explorer&p=2"),
    ("category=closed_qa&page=4&q=a+b&row=7", "?category=closed_qa&p=4&q=a+b&row=7"),
    ("page=2&p=5", "?p=5"),  # an explicit p wins; page is dropped
    ("page=x", "?p=x"),  # renamed as is; parse_query then ignores a bad page
    ("page=2&page=3", "?p=2"),
])
def test_a_legacy_page_link_is_rewritten(query, expected):
    assert legacy_page_redirect("GET", "/", query) == expected


def test_only_page_loads_are_rewritten():
    assert legacy_page_redirect("GET", "/", "tab=explorer&p=2") is None
    assert legacy_page_redirect("GET", "/", "") is None
    assert legacy_page_redirect("POST", "/", "page=2") is None
    assert legacy_page_redirect("GET", "/gradio_api/info/", "page=2") is None
    assert legacy_page_redirect("GET", "/config/", "page=2") is None
    assert legacy_page_redirect("GET", "/gradio_api/queue/data", "page=2") is None
    assert legacy_page_redirect("GET", "/space/", "page=2") == "?p=2"  # served under a root path


@pytest.mark.parametrize("query", ["?page=1", "?tab=explorer&page=2", "?category=closed_qa&page=3&row=5"])
def test_the_server_answers_legacy_links_with_the_same_view(explorer_url, query):
    with httpx.Client(timeout=60) as client:
        first = client.get(explorer_url + query)
        assert first.status_code == 307, first.text[:300]
        target = first.headers["location"]
        assert "page=" not in target and target.startswith("?")
        assert parse_query(target).page == int(query.split("page=")[1].split("&")[0])
        page = client.get(explorer_url + query, follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "p=" in str(page.url) and "page=" not in str(page.url)
        # Links in the new form are served as they are.
        assert client.get(explorer_url + "?tab=explorer&p=2").status_code == 200


def test_the_records_shown_travel_in_the_link():
    query = build_query(["open_qa"], "river", source="contributions", page=2, row=3)
    assert query.startswith("?tab=explorer&source=contributions&")
    view = parse_query(query)
    assert (view.source, view.categories, view.search, view.page, view.row) == ("contributions", ["open_qa"], "river", 2, 3)
    assert "source" not in build_query(source="loaded")  # the default stays out of links
    assert parse_query("source=both").source == "both" and parse_query("source=both").explorer
    assert parse_query("source=everything").source == "loaded"  # an unknown value is dropped, as for other keys


def test_a_dropdown_left_as_it_is_is_told_from_the_views_link():
    """Sort and Records send `input` when they merely lose the focus: the view's link says whether the value
    they send is the one on screen already (explorer.tab.already_shown), and then nothing is redrawn."""
    from explorer.history import PUSH, tag
    from explorer.query import DEFAULT_SORT
    from explorer.tab import already_shown

    shown = tag(build_query(["closed_qa"], "river", False, "instruction length, longest first", 2, source="both"), PUSH)
    assert already_shown(shown, "sort", "instruction length, longest first")
    assert not already_shown(shown, "sort", DEFAULT_SORT)
    assert already_shown(shown, "source", "both") and not already_shown(shown, "source", "loaded")
    assert already_shown("", "sort", DEFAULT_SORT) and already_shown("", "source", "loaded")  # before any view is drawn
