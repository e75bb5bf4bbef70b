"""What the Explorer shows, tested without a browser: the table, the page box, the charts' bins, the words."""
import numpy as np
import pytest

from explorer.charts import length_histogram
from explorer.search import parse, parse_or_none
from explorer.view import (cell_preview, export_note, length_column, plain_error, record_html, resolve_page, sort_note,
                           summary, table_html)

RECORDS = [
    {"row": 3, "category": "information_extraction", "instruction": "Where is the <b>river</b>?", "context": "",
     "response": "The River flows " + "on and on " * 40 + "to the river mouth.", "source": "x"},
    {"row": 9, "category": "open_qa", "instruction": "Why?", "context": "Because.", "response": "So."},
]


def test_the_table_escapes_marks_and_numbers_rows():
    page = table_html(RECORDS, "river", regex=False)
    assert "<b>river</b>" not in page and "&lt;b&gt;<mark>river</mark>&lt;/b&gt;" in page
    assert page.count("<tr data-row=") == 2 and "data-row='3'" in page and "data-row='9'" in page
    assert "aria-label='Open row 3'" in page  # the keyboard opens rows through this button
    assert "<th scope='col' class='c-len'>" not in page  # no length column in dataset order
    assert "dolly-detail" not in page


def test_a_length_sort_adds_its_length_column():
    page = table_html(RECORDS, sort="response length, longest first")
    assert "<th scope='col' class='c-len'>response length</th>" in page
    assert f"<td class='c-len'>{len(RECORDS[0]['response']):,}</td>" in page


def test_the_opened_row_is_marked_and_followed_by_its_record():
    page = table_html(RECORDS, opened=RECORDS[1])
    assert "<tr data-row='9' aria-current='true' class='is-open'>" in page
    after = page.split("data-row='9'")[1]
    assert after.index("dolly-detail") < after.index("</tbody>") and "data-action='try'" in after
    assert "Because." in after
    assert "is-open" not in table_html(RECORDS, opened={**RECORDS[1], "row": 77})  # not on this page


def test_an_empty_page_says_why():
    assert "No rows to show." in table_html([])
    assert "Fix the search" in table_html([], message="Fix the search to see rows.")


def test_a_cell_shows_the_text_around_its_first_match():
    text = "word " * 100 + "the needle here " + "word " * 20
    preview = cell_preview(text, parse("needle"), chars=80)
    assert preview.startswith("…") and "<mark>needle</mark>" in preview and preview.endswith("…")
    assert cell_preview("a\n\nb   c") == "a b c"  # one line per cell
    assert cell_preview("x" * 500, None, chars=50) == "x" * 50 + "…"
    assert parse_or_none("(unclosed", True) is None  # shown unmarked; the summary line says why


@pytest.mark.parametrize("typed, page, words", [
    ("4", 4, ""), (" 4 ", 4, ""), (4, 4, ""), ("1,0", 10, ""),
    ("0", 1, "Pages start at 1"), ("-3", 1, "Pages start at 1"),
    ("3.5", 3, "whole numbers"), ("99", 12, "There are 12 pages"),
    ("", 5, "Type a page number"), (None, 5, "Type a page number"),
    ("abc", 5, "is not a page number"), ("nan", 5, "Type a page number"), ("inf", 5, "Type a page number"),
])
def test_the_page_box_never_fails(typed, page, words):
    shown, note = resolve_page(typed, pages=12, current=5)
    assert shown == page and (words in note if words else note == "")


def test_the_page_box_with_one_page():
    assert resolve_page("2", pages=1, current=1) == (1, "There is 1 page: showing the last.")


def test_length_bins_show_a_long_tailed_distribution():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.lognormal(5.5, 1.0, 15_000).astype(int), [26_000]])  # like dolly's responses
    histogram = length_histogram(lengths)
    assert histogram["rows"].sum() == len(lengths)
    assert 5 <= len(histogram) <= 13
    assert histogram["rows"].iloc[0] < 0.5 * len(lengths)  # not everything in the first bar
    assert histogram["characters"].iloc[-1].startswith("≥ ")  # the tail shares one last bar
    assert histogram["rows"].iloc[-1] <= 0.03 * len(lengths)
    assert sorted(histogram["characters"]) == histogram["characters"].tolist()  # text order = numeric order
    widths = np.diff(histogram["start"])
    assert len(set(widths[:-1])) == 1 and str(widths[0])[0] in "125"  # round, equal widths


def test_length_bins_edge_cases():
    assert length_histogram([]).empty
    single = length_histogram([0, 0, 0])
    assert single["rows"].tolist() == [3]
    short = length_histogram([35, 40, 50, 99, 120])
    assert short["start"].iloc[0] == 30  # starts near the shortest, not at 0
    assert short["rows"].sum() == 5


def test_the_export_note_says_which_order():
    assert "dataset order" in export_note(12, "dataset order") and "12 rows" in export_note(12, "dataset order")
    note = export_note(1, "context length, shortest first")
    assert "1 row " in note and "table's order (context length, shortest first)" in note and "not dataset order" in note


def test_load_errors_in_plain_words():
    hub = ("Could not load dataset 'd/x' from the Hugging Face Hub (ConnectionError: Couldn't reach 'd/x' on the "
           "Hub (LocalEntryNotFoundError)). If the Hub is unreachable, load it from a file: python app.py --data f.jsonl")
    plain, detail = plain_error(hub)
    assert plain == ("Could not load dataset 'd/x' from the Hugging Face Hub. If the Hub is unreachable, load it "
                     "from a file: python app.py --data f.jsonl")
    assert detail == hub
    assert plain_error("Could not load the dataset 'x': KeyError: 'a'")[0] == "Could not load the dataset 'x': 'a'"
    assert plain_error("Data file not found: /x.jsonl (check the path).") == ("Data file not found: /x.jsonl (check the path).", "")


def test_a_match_across_the_cell_cut_is_shown_whole_and_words_are_not_cut():
    text = "needle " + "x" * 30 + " needle and then some more words"
    preview = cell_preview(text, parse("needle"), chars=40)  # the second match spans characters 38-44
    assert preview == "<mark>needle</mark> " + "x" * 30 + " <mark>needle</mark>…"
    assert cell_preview("alpha beta gamma delta", None, chars=13) == "alpha beta…"  # not "alpha beta ga…"
    long = "word " * 100 + "the needle here " + "word " * 20
    assert "<mark>needle</mark>" in cell_preview(long, parse("needle"), chars=80)
    assert cell_preview("x" * 500, None, chars=50) == "x" * 50 + "…"  # one long word: cut where it must


def test_record_text_reads_in_its_own_direction():
    arabic = {"row": 1, "category": "open_qa", "instruction": "ما هي عاصمة مصر؟", "context": "", "response": "القاهرة."}
    assert table_html([arabic]).count("<div class='dolly-clamp' dir='auto'>") == 3
    assert record_html(arabic).count("dir='auto'") == 3


def test_the_summary_says_row_for_one_row():
    assert summary(1, 1, 1, 15_011).startswith("**1** matching row of 15,011 ·")
    assert summary(2, 1, 1, 15_011).startswith("**2** matching rows of")


def test_best_match_says_when_there_is_nothing_to_rank_by():
    assert sort_note("best match", "river") == "" and "dolly-sort-note" not in table_html(RECORDS, "river", sort="best match")
    assert "no search to rank by" in sort_note("best match") and "dataset order" in sort_note("best match")
    assert "regular expression" in sort_note("best match", "riv.r", regex=True)
    assert "dolly-sort-note" in table_html(RECORDS, "", sort="best match")
    assert sort_note("dataset order") == "" and length_column("best match") is None
    assert "best match" in export_note(3, "best match")
