"""The Explorer's logic without a browser: filters, search, sort, paging, charts, export, deep links,
and the row view's escaping/highlighting. Expected answers are computed the slow, obvious way in Python."""
import re

import pandas as pd
import pytest

from dolly.data import REQUIRED_COLUMNS, TEXT_FIELDS, load_records
from explorer.export import ExportError, export_table
from explorer.links import build_query, parse_query
from explorer.query import PAGE_SIZE, SORTS, Index, QueryError
from explorer.tab import highlight, record_html


@pytest.fixture(scope="module")
def frame(dolly_records):
    return pd.DataFrame(dolly_records)


@pytest.fixture(scope="module")
def index(frame):
    return Index(frame)


def expected_rows(records, categories=(), needle=None, pattern=None):
    rows = []
    for i, r in enumerate(records):
        if categories and r["category"] not in categories:
            continue
        fields = [r[f] for f in TEXT_FIELDS]
        if needle is not None and not any(needle.lower() in f.lower() for f in fields):
            continue
        if pattern is not None and not any(re.search(pattern, f, re.IGNORECASE | re.MULTILINE) for f in fields):
            continue
        rows.append(i)
    return rows


def test_categories_and_counts(index, dolly_records):
    assert index.categories[:8] == sorted({r["category"] for r in dolly_records})
    for category, count in index.counts.items():
        assert count == sum(r["category"] == category for r in dolly_records)


def test_no_filter_is_every_row_in_dataset_order(index, dolly_records):
    selection = index.select()
    assert selection.rows.tolist() == list(range(len(dolly_records)))
    first = index.page(selection, 1)
    assert [r["row"] for r in first] == list(range(PAGE_SIZE))
    assert {k: first[3][k] for k in REQUIRED_COLUMNS} == dolly_records[3]


def test_category_filter_several_at_once(index, dolly_records):
    cats = ["closed_qa", "summarization"]
    assert index.select(cats).rows.tolist() == expected_rows(dolly_records, cats)


@pytest.mark.parametrize("needle", ["river", "RIVER", "Zürich", "東京", "a.b", "🙂", "xyzzy-not-there", "in the"])
def test_literal_search_is_case_insensitive_and_literal(index, dolly_records, needle):
    wanted = expected_rows(dolly_records, needle=needle)
    assert index.select([], needle).rows.tolist() == wanted
    assert bool(wanted) == (needle not in ("a.b", "xyzzy-not-there"))


def test_literal_search_does_not_treat_dots_as_wildcards(index):
    assert index.select([], "a.b").total == 0
    assert index.select([], "a.b", regex=True).total > 0  # "a b", "a-b"...: the regex does


def test_search_within_categories(index, dolly_records):
    got = index.select(["information_extraction", "open_qa"], "museum").rows.tolist()
    assert got == expected_rows(dolly_records, ["information_extraction", "open_qa"], needle="museum")
    assert got  # the generator's vocabulary makes this non-empty


def test_search_does_not_match_across_fields(frame):
    tiny = pd.DataFrame([{"instruction": "alpha", "context": "", "response": "beta", "category": "open_qa"}])
    assert Index(tiny).select([], "alpha beta").total == 0
    assert Index(tiny).select([], "ALPHA").total == 1


@pytest.mark.parametrize("pattern", [r"riv\w+ (mountain|city)", r"^the ", r"\.$", r"(東京|数据)\s", r"CAF[eé]"])
def test_regex_search(index, dolly_records, pattern):
    wanted = expected_rows(dolly_records, pattern=pattern)
    assert wanted and index.select([], pattern, regex=True).rows.tolist() == wanted


def test_bad_regex_is_a_message(index):
    with pytest.raises(QueryError, match=r"Invalid regular expression '\(unclosed'.*Untick 'Regex'"):
        index.select([], "(unclosed", regex=True)
    assert index.select([], "(unclosed").total == 0  # the same text as a literal is fine


def test_unknown_category_lists_known_ones(index):
    with pytest.raises(QueryError, match=r"Unknown category 'poetry'. Known categories: brainstorming, "):
        index.select(["open_qa", "poetry"])


@pytest.mark.parametrize("sort", [s for s in SORTS if s != "dataset order"])
def test_sort_by_length(index, dolly_records, sort):
    field = next(f for f in TEXT_FIELDS if sort.startswith(f))
    longest_first = "longest" in sort
    rows = index.select(["closed_qa", "summarization", "brainstorming"], "", sort=sort).rows.tolist()
    wanted = sorted(expected_rows(dolly_records, ["closed_qa", "summarization", "brainstorming"]),
                    key=lambda i: (-len(dolly_records[i][field]) if longest_first else len(dolly_records[i][field]), i))
    assert rows == wanted


def test_pages_and_their_bounds(index, dolly_records):
    selection = index.select(["open_qa"])
    total = len(expected_rows(dolly_records, ["open_qa"]))
    assert selection.total == total and selection.pages == -(-total // PAGE_SIZE)
    last = index.page(selection, selection.pages)
    assert [r["row"] for r in last] == selection.rows.tolist()[(selection.pages - 1) * PAGE_SIZE:]
    for bad in (0, selection.pages + 1, -1):
        with pytest.raises(QueryError, match=rf"out of range: this selection has page\(s\) 1 to {selection.pages}"):
            index.page(selection, bad)
    with pytest.raises(QueryError, match="whole number"):
        index.page(selection, 1.5)
    empty = index.select([], "xyzzy-not-there")
    assert empty.pages == 1 and index.page(empty, 1) == []


def test_charts_describe_the_selection(index, dolly_records):
    selection = index.select(["closed_qa", "open_qa"], "the")
    counts = index.category_counts(selection).set_index("category")["rows"]
    assert counts["closed_qa"] == len(expected_rows(dolly_records, ["closed_qa"], needle="the"))
    assert counts["summarization"] == 0
    for field in TEXT_FIELDS:
        histogram = index.length_histogram(selection, field)
        assert histogram["rows"].sum() == selection.total
    longest = max(len(dolly_records[i]["context"]) for i in selection.rows)
    context = index.length_histogram(selection, "context")
    assert context["start"].iloc[-1] <= longest
    assert sorted(context["characters"]) == context["characters"].tolist()  # text order = numeric order
    assert index.length_histogram(index.select([], "xyzzy-not-there"), "context").empty


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    index = Index(load_records(path))
    assert index.categories == [] and index.select().total == 0 and index.page(index.select(), 1) == []
    with pytest.raises(QueryError, match=r"Known categories: \(none: the dataset is empty\)"):
        index.select(["open_qa"])


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_export_round_trips_through_load_records(index, dolly_records, file_format):
    selection = index.select(["closed_qa", "creative_writing"], "the", sort="context length, longest first")
    path = export_table(index.table(selection), file_format)
    assert path.endswith(f"dolly-{selection.total}-rows.{file_format}")
    loaded = load_records(path, progress=False)
    assert list(loaded.columns) == list(REQUIRED_COLUMNS)  # the schema, no row numbers
    assert loaded.to_dict("records") == [dolly_records[i] for i in selection.rows]


def test_export_of_nothing_loads_as_an_empty_dataset(index):
    for file_format in ("jsonl", "csv", "parquet"):
        path = export_table(index.table(index.select([], "xyzzy-not-there")), file_format)
        assert len(load_records(path, progress=False)) == 0


def test_export_reports_progress_and_rejects_unknown_formats(index):
    seen = []
    export_table(index.table(index.select()), "jsonl", progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 400) and seen[-1] == (400, 400)
    with pytest.raises(ExportError, match=r"Unknown export format 'xml': use one of jsonl, csv, parquet"):
        export_table(index.table(index.select()), "xml")
    with pytest.raises(ExportError):
        export_table(index.table(index.select()), "../../etc/passwd")


def test_deep_link_round_trip():
    query = build_query(["closed_qa", "open_qa"], "café & co", True, "context length, longest first", 3, 17)
    view = parse_query(query)
    assert view.categories == ["closed_qa", "open_qa"] and view.search == "café & co" and view.regex
    assert view.sort == "context length, longest first" and view.page == 3 and view.row == 17 and view.explorer


def test_deep_link_parsing_is_forgiving():
    view = parse_query("category=closed_qa,poetry&category=open_qa&page=zero&row=-4&sort=bogus",
                       known_categories={"closed_qa", "open_qa"})
    assert view.categories == ["closed_qa", "open_qa"]
    assert view.page == 1 and view.row is None and view.sort == "dataset order" and view.explorer
    assert not parse_query("").explorer and not parse_query("?tab=chat").explorer
    assert parse_query({"q": "  spaced  ", "tab": "explorer"}).search == "  spaced  "


def test_row_view_escapes_html_and_marks_matches():
    record = {"row": 5, "instruction": "What is <b>bold</b> in Zürich?", "context": "",
              "response": "Line one.\n\nLine *two* & zürich [x](javascript:alert(1))", "category": "open_qa"}
    page = record_html(record, "zürich", regex=False)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<mark>") == 2 and "<mark>Zürich</mark>" in page and "<mark>zürich</mark>" in page
    assert "Line one.\n\nLine *two* &amp; " in page  # blank lines kept (pre-wrap), markdown left as text
    assert "(empty)" in page  # the empty context is shown as such
    assert highlight("a<b", "<", regex=False) == "a<mark>&lt;</mark>b"
    assert highlight("riverbank", r"riv\w+", regex=True) == "<mark>riverbank</mark>"
    assert highlight("x(y", "(", regex=True) == "x(y"  # a pattern Python cannot compile: no marks, no crash
