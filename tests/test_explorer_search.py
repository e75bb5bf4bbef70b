"""The Explorer's search text rules (explorer/search.py) through Index.select and the highlighting:
text a user typed that is verbatim in a record is found and marked whatever its Unicode form or case
(issue 14 §2), no user pattern reaches Python's `re`, and a slow query stops with a message (§1)."""
import threading
import unicodedata

import pandas as pd
import pytest

from explorer import query
from explorer.query import Index, QueryError
from explorer.search import SearchError, fold_text, parse
from explorer.view import cell_preview, highlight, record_html, table_html
from tests.dolly_data import make_records

NFC_CAFE, NFD_CAFE = "caf\u00e9", "cafe\u0301"
RECORDS = [
    {"instruction": "Where is İstanbul?", "context": "", "response": "ΣΊΣΥΦΟΣ was a king of Ephyra.",
     "category": "open_qa"},
    {"instruction": f"Un {NFD_CAFE} noir, s'il vous plaît", "context": "", "response": "Voilà.", "category": "open_qa"},
    {"instruction": f"Un {NFC_CAFE} crème", "context": "Zürich, Straße", "response": "Merci.", "category": "closed_qa"},
    {"instruction": "A plain cafe", "context": "", "response": "istanbul, lower case", "category": "open_qa"},
]


@pytest.fixture(scope="module")
def index():
    return Index(pd.DataFrame(RECORDS))


@pytest.mark.parametrize("typed, rows", [
    ("İstanbul", [0, 3]),  # Python's lower() makes it "i̇stanbul" (two characters), Arrow's "istanbul"
    ("istanbul", [0, 3]),
    ("ΣΊΣΥΦΟΣ was", [0]),  # Python lowers the last Σ to a final sigma, Arrow to σ
    ("σίσυφος was", [0]),  # typed in lower case, final sigma and all
    (NFC_CAFE, [1, 2, 3]),  # NFC finds NFD, and (accents folded) the plain "cafe"...
    (NFD_CAFE, [1, 2, 3]),  # ...and NFD finds NFC
    ("CAFÉ", [1, 2, 3]),
    ("strasse", [2]),  # one case fold: ß is ss
])
def test_text_typed_as_it_stands_in_a_record_is_found(index, typed, rows):
    assert index.select([], typed).rows.tolist() == rows


@pytest.mark.parametrize("typed, text, marked", [
    ("İstanbul", "Where is İstanbul?", "Where is <mark>İstanbul</mark>?"),
    ("ΣΊΣΥΦΟΣ was", "ΣΊΣΥΦΟΣ was a king", "<mark>ΣΊΣΥΦΟΣ was</mark> a king"),
    ("σίσυφος", "ΣΊΣΥΦΟΣ was", "<mark>ΣΊΣΥΦΟΣ</mark> was"),
    (NFC_CAFE, f"Un {NFD_CAFE} noir", f"Un <mark>{NFD_CAFE}</mark> noir"),  # marked in the record's own spelling
    (NFD_CAFE, f"Un {NFC_CAFE} crème", f"Un <mark>{NFC_CAFE}</mark> crème"),
    ("e", f"{NFD_CAFE} et {NFC_CAFE}", f"caf<mark>{NFD_CAFE[-2:]}</mark> <mark>e</mark>t caf<mark>é</mark>"),  # é is e
    ("straße", "STRASSE", "<mark>STRASSE</mark>"),
])
def test_the_highlight_marks_what_the_search_found(typed, text, marked):
    assert highlight(text, typed, regex=False) == marked


def test_the_table_and_row_view_mark_unicode_matches(index):
    records = index.page(index.select([], NFD_CAFE), 1)
    page = table_html(records, NFD_CAFE)
    assert page.count("<mark>") == 3 and f"<mark>{NFD_CAFE}</mark>" in page and f"<mark>{NFC_CAFE}</mark>" in page
    assert "<mark>cafe</mark>" in page
    assert f"<mark>{NFC_CAFE}</mark>" in record_html(records[1], NFD_CAFE)
    assert "<mark>İstanbul</mark>" in record_html(index.record(0), "istanbul")


def test_selection_and_highlight_agree_on_generated_unicode_text():
    """Every row a literal search selects has a mark for it in its row view, for each of the test data's
    non-ASCII words, in NFC and NFD, as typed and upper-cased."""
    records = make_records(200, seed=3)
    data = Index(pd.DataFrame(records))
    for word in ["café", "naïve", "Zürich", "Ελλάδα", "São Paulo", "façade"]:
        for typed in {unicodedata.normalize(form, text) for form in ("NFC", "NFD") for text in (word, word.upper())}:
            selection = data.select([], typed)
            assert selection.total, typed
            for record in data.records(selection.rows):
                assert "<mark>" in record_html(record, typed), (typed, record["row"])


def test_regex_match_offsets_are_characters_not_bytes():
    found = parse("(?:ü|é)+b", regex=True)
    text = "ααé zééb Zü"
    assert found.spans(text) == [(5, 8)] and text[5:8] == "ééb"
    assert highlight("ααé zÉÉB", "é+b", regex=True) == "ααé z<mark>ÉÉB</mark>"  # case-insensitive, on characters
    assert cell_preview("日本語 " * 60 + "needle", parse("need.e", regex=True), chars=40).endswith("<mark>needle</mark>")


def _in_time(function, seconds):
    """function() run in a thread, or None if it has not returned within `seconds` (a hung engine)."""
    out = []
    worker = threading.Thread(target=lambda: out.append(function()), daemon=True)
    worker.start()
    worker.join(seconds)
    return out[0] if out else None


def test_highlighting_a_catastrophic_pattern_is_linear():
    """`(.*a){40}` against a long line without 40 a's: Python's backtracking re takes hours (it froze
    the server); RE2 answers at once. 60 s is only a hang detector, not a speed target."""
    text = "a" * 30 + "b" * 3000
    marked = _in_time(lambda: cell_preview(text, parse("(.*a){40}", regex=True)), 60)
    assert marked is not None, "highlighting (.*a){40} did not finish within 60 s"
    assert "<mark>" not in marked
    assert _in_time(lambda: highlight(text + "a" * 40, "(.*a){40}", regex=True), 60).count("<mark>") == 1


def test_a_slow_query_stops_at_the_time_limit_with_a_message(monkeypatch):
    """`.{1000}.{1000}x` is linear in RE2 but slow (tens of µs a character): over 2,000 rows it would run
    for many seconds. With the limit at 0.2 s the query stops with a message; a fast query still answers."""
    data = Index(pd.DataFrame(make_records(2000, seed=1)))
    monkeypatch.setattr(query, "QUERY_SECONDS", 0.2)
    with pytest.raises(QueryError, match=r"The search was stopped after 0\.2 s, \d+% of the way through the rows: "
                                         r"this regular expression is too slow.*Make it simpler"):
        data.select([], ".{1000}.{1000}x", regex=True)
    assert data.select([], "river", regex=True).total > 0


@pytest.mark.parametrize("bad, regex, message", [
    ("caf\ud800", False, r"search is not valid text: character 4 is a lone surrogate \('\\ud800'\), half of a UTF-16 character pair"),
    ("(unclosed", True, r"Invalid regular expression '\(unclosed': missing \).*Untick 'Regex'"),
    ("a{1001}", True, r"Invalid regular expression 'a\{1001\}': invalid repetition size"),
    ("x" * 2001, False, r"search is 2,001 characters long; the limit is 2,000"),
    (3, False, r"search must be text, got int 3"),
])
def test_what_a_search_may_be(index, bad, regex, message):
    with pytest.raises(SearchError, match=message):
        parse(bad, regex)
    with pytest.raises(QueryError, match=message):
        index.select([], bad, regex)
    assert highlight("text", bad, regex) == "text"  # the view shows text unmarked; the summary says why


def test_the_fold_is_one_function_for_both_sides():
    assert fold_text("ΣΊΣΥΦΟΣ") == fold_text("σίσυφος") == fold_text("ΣΙΣΥΦΟΣ") == "σισυφοσ"
    assert fold_text(NFD_CAFE) == fold_text("CAFÉ") == fold_text("cafe") == "cafe"
    assert fold_text("İSTANBUL") == "istanbul"


# -- accents folded both ways (issue 15 §5), as the Dataset Viewer's full-text search does ---------
ACCENTS = [
    {"instruction": "Tell me about zürich", "context": "", "response": "A city.", "category": "open_qa"},
    {"instruction": "Tell me about Zurich", "context": "", "response": "A city.", "category": "open_qa"},
    {"instruction": "Where is the cafe?", "context": "", "response": "Next to the crème brûlée shop.", "category": "open_qa"},
    {"instruction": "Où est le café ?", "context": "Ça va, São Paulo", "response": "Ici.", "category": "closed_qa"},
    {"instruction": "Nothing accented", "context": "", "response": "zurichsee? no: Zuerich", "category": "open_qa"},
]


@pytest.mark.parametrize("typed, rows", [
    ("Zurich", [0, 1, 4]), ("zürich", [0, 1, 4]), ("ZÜRICH", [0, 1, 4]), ("zu\u0308rich", [0, 1, 4]),
    ("cafe", [2, 3]), ("café", [2, 3]), ("CAFÉ", [2, 3]),
    ("creme brulee", [2]), ("ou est", [3]), ("ca va, sao paulo", [3]),
    ("zuerich", [4]),  # "ü" is "u", not "ue"
])
def test_literal_search_folds_accents_and_case_both_ways(typed, rows):
    typed = typed.encode().decode("unicode_escape") if "\\u" in typed else typed
    assert Index(pd.DataFrame(ACCENTS)).select([], typed).rows.tolist() == rows


@pytest.mark.parametrize("typed, text, marked", [
    ("Zurich", "Tell me about zürich.", "Tell me about <mark>zürich</mark>."),
    ("zürich", "ZURICH", "<mark>ZURICH</mark>"),
    ("cafe", f"un {NFD_CAFE}, un {NFC_CAFE}", f"un <mark>{NFD_CAFE}</mark>, un <mark>{NFC_CAFE}</mark>"),
    ("creme brulee", "Crème Brûlée!", "<mark>Crème Brûlée</mark>!"),
])
def test_the_highlight_marks_an_accent_folded_match_in_the_records_spelling(typed, text, marked):
    assert highlight(text, typed, regex=False) == marked


def test_regex_does_not_fold_accents():
    data = Index(pd.DataFrame(ACCENTS))
    assert data.select([], "zurich", regex=True).rows.tolist() == [1, 4]  # case-insensitive, not accent-blind
    assert data.select([], "zürich", regex=True).rows.tolist() == [0]
    assert highlight("zürich Zurich", "zurich", regex=True) == "zürich <mark>Zurich</mark>"
