"""The Explorer's logic without a browser: filters, search, sort, paging, charts, export, deep links,
and the row view's escaping/highlighting. Expected answers are computed the slow, obvious way in Python."""
import re

import pandas as pd
import pytest

from dolly.data import REQUIRED_COLUMNS, TEXT_FIELDS, load_records
from explorer.charts import length_histogram
from explorer.export import ExportError, ExportStore
from explorer.links import build_query, parse_query
from explorer.query import MAX_SEARCH_CHARS, PAGE_SIZE, SORTS, Index, QueryError, check_page
from explorer.view import highlight, record_html


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


@pytest.fixture(scope="module")
def lines():
    """Rows where exactly some fields hold a newline, one ends in '?' and the next starts with text."""
    return [
        {"instruction": "What is this?", "context": "", "response": "A thing.", "category": "open_qa"},
        {"instruction": "Two lines?", "context": "first\nsecond", "response": "Yes.", "category": "closed_qa"},
        {"instruction": "Why?", "context": "", "response": "Because\n\nof this.", "category": "open_qa"},
        {"instruction": "Ends with a question?", "context": "Start", "response": "end", "category": "closed_qa"},
        {"instruction": "", "context": "", "response": "", "category": "brainstorming"},
    ]


def test_searching_the_separator_characters_finds_only_the_text(lines):
    index = Index(pd.DataFrame(lines))
    with_newline = [i for i, r in enumerate(lines) if any("\n" in r[f] for f in TEXT_FIELDS)]
    assert with_newline == [1, 2]
    assert index.select([], "\n").rows.tolist() == with_newline  # today's bug: every row
    assert index.select([], "\n\n").rows.tolist() == [2]
    assert index.select([], "\x00").total == 0
    assert index.select([], "?\n").total == 0  # a '?' ending one field, then the separator
    assert index.select([], "\nsecond").rows.tolist() == [1]
    assert index.select([], "?\n\x00\nstart").total == 0


@pytest.mark.parametrize("pattern", [r"\?\s", r"\?\n", r"question\?[^x]*start", r"\x00", r"\?$\s+^start",
                                     r"(?s)\?.+start", r"\n", r"^start$"])
def test_a_regex_never_matches_across_fields(lines, pattern):
    index = Index(pd.DataFrame(lines))
    wanted = [i for i, r in enumerate(lines)
              if any(re.search(pattern, r[f], re.IGNORECASE | re.MULTILINE) for f in TEXT_FIELDS)]
    assert index.select([], pattern, regex=True).rows.tolist() == wanted


def test_a_search_longer_than_the_cap_is_a_clear_error(index):
    assert index.select([], "a" * MAX_SEARCH_CHARS).total == 0  # at the cap: searched
    for regex in (False, True):
        with pytest.raises(QueryError, match=rf"search is 1,000,000 characters long; the limit is {MAX_SEARCH_CHARS:,}"):
            index.select([], "river " * 166_666 + "abcd", regex=regex)


@pytest.mark.parametrize("bad, message", [
    (5, "search must be text, got int 5"),
    (["river"], "search must be text, got list"),
])
def test_search_must_be_text(index, bad, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        index.select([], bad)


@pytest.mark.parametrize("bad, message", [
    (5, "categories must be a list of category names (empty = all), got int 5"),
    ({"open_qa": 1}, "categories must be a list of category names (empty = all), got dict"),
    (["open_qa", 3], "categories must be a list of category names (text), but it holds int 3"),
])
def test_categories_must_be_a_list_of_names(index, bad, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        index.select(bad)


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


@pytest.mark.parametrize("sort", [s for s in SORTS if isinstance(SORTS[s], tuple)])
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


@pytest.mark.parametrize("page, number", [(2, 2), ("2", 2), (" 3 ", 3), (2.0, 2), ("2.0", 2)])
def test_a_page_that_is_exactly_a_whole_number_is_accepted(page, number):
    assert check_page(page, 5) == number


@pytest.mark.parametrize("page", [1.5, "1.5", "abc", "", None, True, float("nan"), float("inf"), "inf", [1], {"page": 1}])
def test_a_page_that_is_not_a_whole_number_is_an_error_naming_page(page):
    with pytest.raises(QueryError, match=r"page must be a whole number from 1 to 5, got "):
        check_page(page, 5)


def test_charts_describe_the_selection(index, dolly_records):
    selection = index.select(["closed_qa", "open_qa"], "the")
    counts = index.category_counts(selection).set_index("category")["rows"]
    assert counts["closed_qa"] == len(expected_rows(dolly_records, ["closed_qa"], needle="the"))
    assert counts["summarization"] == 0
    for field in TEXT_FIELDS:  # the lengths the tab's charts bin are the selection's own
        histogram = length_histogram(index.lengths[field][selection.rows])
        assert histogram["rows"].sum() == selection.total
    longest = max(len(dolly_records[i]["context"]) for i in selection.rows)
    context = length_histogram(index.lengths["context"][selection.rows])
    assert context["start"].iloc[-1] <= longest
    assert length_histogram(index.lengths["context"][index.select([], "xyzzy-not-there").rows]).empty


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    index = Index(load_records(path))
    assert index.categories == [] and index.select().total == 0 and index.page(index.select(), 1) == []
    with pytest.raises(QueryError, match=r"Known categories: \(none: the dataset is empty\)"):
        index.select(["open_qa"])


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_export_round_trips_through_load_records(index, dolly_records, file_format, tmp_path):
    selection = index.select(["closed_qa", "creative_writing"], "the", sort="context length, longest first")
    path = ExportStore(tmp_path).export(index.table(selection), file_format)
    assert path.endswith(f"dolly-{selection.total}-rows.{file_format}")
    loaded = load_records(path, progress=False)
    assert list(loaded.columns) == list(REQUIRED_COLUMNS)  # the schema, no row numbers
    assert loaded.to_dict("records") == [dolly_records[i] for i in selection.rows]


def test_export_of_nothing_loads_as_an_empty_dataset(index, tmp_path):
    store = ExportStore(tmp_path)
    for file_format in ("jsonl", "csv", "parquet"):
        path = store.export(index.table(index.select([], "xyzzy-not-there")), file_format)
        assert len(load_records(path, progress=False)) == 0


def test_export_reports_progress_and_rejects_unknown_formats(index, tmp_path):
    store, seen = ExportStore(tmp_path), []
    store.export(index.table(index.select()), "jsonl", progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 400) and seen[-1] == (400, 400)
    with pytest.raises(ExportError, match=r"Unknown export format 'xml' \(file_format\): use one of jsonl, csv, parquet"):
        store.export(index.table(index.select()), "xml")
    for bad in ("../../etc/passwd", ["csv"], None, 3):
        with pytest.raises(ExportError, match="file_format"):
            store.export(index.table(index.select()), bad)
    assert store.export(index.table(index.select()), " .CSV ").endswith(".csv")


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


# -- "best match": BM25 relevance (issue 15 §5) ------------------------------------------------
RANKED = [
    {"instruction": "Name a river.", "context": "", "response": "The Nile is a long river in Africa, and " + "more words " * 30,
     "category": "open_qa"},
    {"instruction": "Tell me about the river", "context": "River, river, river: the river flows.", "response": "A river.",
     "category": "closed_qa"},
    {"instruction": "What is a bank?", "context": "", "response": "A place for money.", "category": "open_qa"},
    {"instruction": "Rivers", "context": "", "response": "The river bank is where the river meets land.", "category": "open_qa"},
    {"instruction": "The Zürich river", "context": "", "response": "The Limmat river runs through Zürich.", "category": "open_qa"},
]


def test_best_match_ranks_the_search_results_by_bm25():
    data = Index(pd.DataFrame(RANKED))
    ranked = data.select([], "river", sort="best match").rows.tolist()
    assert sorted(ranked) == data.select([], "river").rows.tolist() == [0, 1, 3, 4]  # the same rows...
    assert ranked[0] == 1 and ranked[-1] == 0  # ...the one all about rivers first, the long one mentioning it last
    # The same order as bm25s gives over each record's three fields (lower case), computed here on its own.
    import bm25s
    texts = ["\n".join(r[f] for f in TEXT_FIELDS).lower() for r in RANKED]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    scores = retriever.get_scores(["river"])
    assert ranked == sorted([0, 1, 3, 4], key=lambda i: (-scores[i], i))
    # Two words: the row with both ranks first; accents folded as the search folds them.
    assert data.select([], "river bank", sort="best match").rows.tolist() == [3]
    assert data.select([], "ZURICH", sort="best match").rows.tolist() == [4]
    assert data.select(["open_qa"], "river", sort="best match").rows.tolist() == [r for r in ranked if r != 1]


def test_best_match_without_words_to_rank_by_is_dataset_order():
    data = Index(pd.DataFrame(RANKED))
    assert data.select([], "", sort="best match").rows.tolist() == [0, 1, 2, 3, 4]
    assert data.select([], "riv.r", regex=True, sort="best match").rows.tolist() == [0, 1, 3, 4]
    assert data.select([], "the", sort="best match").rows.tolist() == data.select([], "the").rows.tolist()  # a stopword
    assert data.select([], "iver", sort="best match").rows.tolist() == [0, 1, 3, 4]  # part of a word: no word matches


def test_best_match_on_a_dataset_too_large_to_rank_is_a_message(monkeypatch):
    # A million rows would be minutes of bm25s indexing in Python, holding the GIL for every user.
    import explorer.query as query

    data = Index(pd.DataFrame(RANKED))
    monkeypatch.setattr(query, "MAX_BEST_MATCH_ROWS", len(RANKED) - 1)
    with pytest.raises(QueryError, match=r"ranks datasets of up to 4 rows; this one has 5\. Sort by dataset order"):
        data.select([], "river", sort="best match")
    assert data.select([], "", sort="best match").rows.tolist() == [0, 1, 2, 3, 4]  # nothing to rank: no index built
    assert data._bm25 is None
