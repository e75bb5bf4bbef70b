"""The Explorer's quality signals without a browser: selection by signal and counts per selection
(explorer.query), the badges and the highlighted spans (explorer.view), deep links (explorer.links), the
background computation (explorer.loader), and /explore with and without its optional `quality` input
through gradio_client and raw HTTP on a real server. Data: clean English records with planted defects
(tests/signal_data.py)."""
import html
import re
import threading
import time

import pandas as pd
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from dolly.data import TEXT_FIELDS
from explorer import quality as quality_section
from explorer.links import build_query, parse_query
from explorer.loader import DatasetLoader
from explorer.query import Index, QueryError, SignalsNotReady
from explorer.signals import SIGNALS, compute
from explorer.view import record_html, table_html
from tests.conftest import NO_MODEL, serve
from tests.test_api_errors import call_http
from tests.dolly_data import write_jsonl
from tests.signal_data import planted_records


@pytest.fixture(scope="module")
def planted():
    records, truth = planted_records(n_clean=300, per_signal=8, seed=3)
    return records, truth


@pytest.fixture(scope="module")
def index(planted):
    records, _ = planted
    index = Index(pd.DataFrame(records))
    index.set_signals(compute(index.frame()))
    return index


# -- selection by signal ---------------------------------------------------------------------------
def test_frame_is_the_dataset_in_dataset_order(planted, index):
    records, _ = planted
    frame = index.frame()
    assert frame[list(TEXT_FIELDS) + ["category"]].to_dict("records") == records


def test_selecting_by_one_signal_gives_its_rows(planted, index):
    _, truth = planted
    for name in ("citations", "empty", "pii", "context_mismatch"):
        selection = index.select(quality=[name])
        assert set(selection.rows.tolist()) == truth[name], name
        assert selection.quality == (name,)


def test_several_signals_are_any_of_them_and_keep_the_other_filters(planted, index):
    records, truth = planted
    both = index.select(quality=["citations", "empty"])
    assert set(both.rows.tolist()) == truth["citations"] | truth["empty"]
    assert list(both.rows) == sorted(both.rows)  # dataset order kept
    summaries = index.select(["summarization"], quality=["citations", "copied"])
    expected = {r for r in truth["citations"] | truth["copied"] if records[r]["category"] == "summarization"}
    assert set(summaries.rows.tolist()) == expected and expected
    # with a search and a sort: the search's rows, in the sort's order, less the unflagged
    searched = index.select([], "worth knowing", False, "response length, longest first")
    flagged = index.select([], "worth knowing", False, "response length, longest first", ["citations"])
    assert list(flagged.rows) == [r for r in searched.rows if r in truth["citations"]]


def test_quality_filter_input_is_checked(index):
    assert index.select(quality="citations").total == index.select(quality=["citations"]).total
    assert index.select(quality=None).total == index.select(quality=[]).total == index.num_rows
    with pytest.raises(QueryError, match="Unknown signal 'typos'. Signals: citations, empty"):
        index.select(quality=["typos"])
    with pytest.raises(QueryError, match="quality must be a list of signal names"):
        index.select(quality=[3])


def test_quality_filter_before_the_signals_is_a_clear_error(planted):
    records, _ = planted
    fresh = Index(pd.DataFrame(records))
    assert fresh.select().total == len(records)  # the table works without them
    with pytest.raises(SignalsNotReady, match="still being computed"):
        fresh.select(quality=["citations"])
    assert fresh.signal_counts(fresh.select()) is None and fresh.signals_per_category(fresh.select()) is None


def test_counts_are_in_the_current_selection(planted, index):
    records, truth = planted
    selection = index.select(["closed_qa", "summarization"], "")
    counts = index.signal_counts(selection)
    for name in SIGNALS:
        expected = sum(1 for r in index.signals.rows(name) if records[r]["category"] in ("closed_qa", "summarization"))
        assert counts[name] == expected, name
    assert counts["citations"] > 0
    searched = index.select([], "[12]")  # a literal search: rows that hold this marker
    assert index.signal_counts(searched)["citations"] == searched.total > 0
    # the filter's boxes carry those counts
    labels = dict((value, label) for label, value in quality_section.choices(counts))
    assert labels["citations"] == f"citations ({counts['citations']:,})" and list(labels) == list(SIGNALS)
    # too_long needs the training's tokenizer: without it the box says so rather than "(0)"
    assert index.signals.token_counts is None and quality_section.not_computed(index) == ("too_long",)
    assert dict((v, l) for l, v in quality_section.choices(counts, ("too_long",)))["too_long"] == "too_long (not computed)"


def test_signals_per_category_chart_frame(planted, index):
    records, _ = planted
    frame = quality_section.chart_frame(index, index.select())
    assert list(frame.columns) == ["category", "signal", "rows"] and (frame["rows"] > 0).all()
    for category, name, rows in frame.itertuples(index=False):
        assert rows == sum(1 for r in index.signals.rows(name) if records[r]["category"] == category)
    assert frame["rows"].sum() == sum(index.signal_counts(index.select()).values())
    only = quality_section.chart_frame(index, index.select(["open_qa"]))
    assert set(only["category"]) == {"open_qa"}
    # drawn as a table: a row per category, a cell per signal with its count
    markup = quality_section.chart_html(frame, index.categories)
    for category, name, rows in frame.itertuples(index=False):
        assert re.search(rf"<tr data-category='{category}'>.*?<td class='some' data-signal='{name}'[^>]*>{rows:,}</td>", markup)
    assert markup.count("<tr data-category=") == len(index.categories)
    assert "still being computed" in quality_section.chart_html(None, index.categories)


# -- what the screen shows ---------------------------------------------------------------------------
def _first(truth, name):
    return min(truth[name])


def test_table_badges_name_the_rows_signals(planted, index):
    _, truth = planted
    row = _first(truth, "citations")
    page = index.records([0, row])
    markup = table_html(page, signals=index.signals)
    flagged = re.search(rf"<tr data-row='{row}' class='is-flagged'>(.*?)</tr>", markup).group(1)
    assert "<span class='dolly-badge' data-signal='citations'" in flagged
    assert html.escape(SIGNALS["citations"], quote=True) in flagged  # the explanation as its tooltip
    assert "<tr data-row='0'>" in markup and markup.count("dolly-badge'") == len(index.signals.of_row(row))
    assert "dolly-badge" not in table_html(page)  # without signals, no badges


def test_record_lists_its_signals_and_highlights_the_spans(planted, index):
    _, truth = planted
    row = _first(truth, "citations")
    record = index.record(row)
    span = index.signals.spans_of(row, "citations")[0]
    marker = record[span.field][span.start:span.end]
    markup = record_html(record, signals=index.signals)
    assert "<li data-signal='citations'><b>citations</b>: " + html.escape(SIGNALS["citations"]) in markup
    assert f"<span class='dolly-flag' data-signal='citations' title='citations'>{html.escape(marker)}</span>" in markup
    assert "<mark>" not in markup  # no search: signal spans only, in their own style
    # a search for the marker: both styles on the same text, properly nested
    both = record_html(record, marker, False, index.signals)
    assert f"<span class='dolly-flag' data-signal='citations' title='citations'><mark>{html.escape(marker)}</mark></span>" in both
    assert "dolly-signals" not in record_html(record)  # without signals: as before


def test_record_spans_are_escaped_and_survive_overlaps(index):
    record = {"row": 0, "instruction": "<b>Why?</b>", "context": "A <script>x</script> fact[12] & more.",
              "response": "Mail <me>@example.com", "category": "closed_qa"}
    frame = pd.DataFrame([{k: v for k, v in record.items() if k != "row"}])
    signals = compute(frame)
    assert signals.of_row(0) and signals.spans_of(0, "citations")
    markup = record_html(record, "fact[1", False, signals)
    assert "<script>" not in markup and "<b>Why" not in markup
    assert "&lt;script&gt;x&lt;/script&gt;" in markup
    assert "<mark>fact</mark><span class='dolly-flag' data-signal='citations' title='citations'><mark>[1</mark></span>" \
           "<span class='dolly-flag' data-signal='citations' title='citations'>2]</span>" in markup
    # well nested: every opened span and mark is closed in order
    stack = []
    for closing, tag in re.findall(r"<(/?)(span|mark)\b", markup):
        if closing:
            assert stack and stack.pop() == tag
        else:
            stack.append(tag)
    assert not stack


def test_clean_record_says_no_signal(planted, index):
    _, truth = planted
    flagged = set().union(*truth.values())
    clean = next(r for r in range(index.num_rows) if r not in flagged and not index.signals.of_row(r))
    assert "no signal flags this record" in record_html(index.record(clean), signals=index.signals)


def test_duplicate_record_names_its_group(planted, index):
    _, truth = planted
    row = _first(truth, "duplicate")
    others = [int(r) for r in index.signals.group(row) if r != row]
    assert others and f"Same group as row {others[0]:,}" in record_html(index.record(row), signals=index.signals)


# -- deep links --------------------------------------------------------------------------------------
def test_deep_link_round_trip_with_quality():
    query = build_query(["closed_qa"], "river", False, "dataset order", 2, 17, quality=["citations", "empty"])
    assert "quality=citations%2Cempty" in query
    view = parse_query(query)
    assert (view.categories, view.search, view.page, view.row, view.quality) == \
        (["closed_qa"], "river", 2, 17, ["citations", "empty"])
    assert view.explorer
    assert parse_query("quality=citations,empty").quality == ["citations", "empty"]
    assert parse_query("quality=pii&quality=typos&quality=pii,empty").quality == ["pii", "empty"]  # unknown dropped
    assert parse_query("quality=citations").explorer  # a quality link is about the Explorer
    assert "quality" not in build_query(["closed_qa"])


# -- in the background -------------------------------------------------------------------------------
def test_signals_compute_in_the_background_after_the_load(planted, tmp_path):
    records, truth = planted
    release = threading.Event()

    def gated(source):
        assert release.wait(60)
        return Index(pd.DataFrame(records))

    dataset = DatasetLoader("planted", load=gated).start()
    assert dataset.quality.status() == "Quality signals are computed once the data is there."
    assert quality_section.info(dataset) == dataset.quality.status()
    seen = []
    release.set()
    assert dataset.wait(60) and dataset.state == "ready"
    index = dataset.get()
    assert index.select().total == len(records)  # the table works whether or not the signals are there
    deadline = time.monotonic() + 120
    while dataset.quality.state == "loading" and time.monotonic() < deadline:
        seen.append(dataset.quality.status())
        time.sleep(0.01)
    assert dataset.quality.state == "ready", dataset.quality.error
    assert all(re.fullmatch(r"computing quality signals… \d+%", line) for line in seen), seen
    assert index.signals is dataset.quality.get()
    assert set(index.select(quality=["citations"]).rows.tolist()) == truth["citations"]
    assert dataset.quality.status() == "" and quality_section.info(dataset) == quality_section.READY_INFO


def test_status_says_how_far_along():
    dataset = DatasetLoader("x", load=lambda source: None)
    dataset.quality._index = object()  # as once started for an index
    dataset.quality.fraction = 0.42
    assert dataset.quality.status() == "computing quality signals… 42%"


def test_loader_without_signals_leaves_the_index_alone(planted):
    records, _ = planted
    dataset = DatasetLoader("planted", load=lambda s: Index(pd.DataFrame(records)), signals=False).start()
    assert dataset.wait(60)
    assert dataset.get().signals is None and dataset.quality._thread is None


# -- /explore on a real server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(planted, tmp_path_factory):
    records, truth = planted
    source = write_jsonl(tmp_path_factory.mktemp("planted") / "planted.jsonl", records)
    dataset = DatasetLoader(str(source)).start()
    assert dataset.wait(60), "the planted dataset did not load"
    assert dataset.quality.wait(120) and dataset.quality.state == "ready", dataset.quality.error
    demo = serve("--data", source, *NO_MODEL, dataset=dataset)
    yield demo.local_url, Client(demo.local_url, verbose=False), truth, len(records)
    demo.close()


def test_explore_without_quality_is_unchanged(served):
    url, client, _, n = served
    rows, total = client.predict([], "", 1, api_name="/explore")
    assert total == n and [r["row"] for r in rows] == list(range(20))
    event, data = call_http(url, "/explore", [[], "", 1])  # an old 3-value call over HTTP
    assert event == "complete" and data == [rows, n]
    assert client.predict(["closed_qa"], "", 1, [], api_name="/explore")[1] == client.predict(["closed_qa"], "", 1, api_name="/explore")[1]
    assert call_http(url, "/explore", [[], "", 1, None]) == ("complete", [rows, n])


def test_explore_with_quality(served):
    url, client, truth, _ = served
    rows, total = client.predict([], "", 1, ["citations"], api_name="/explore")
    assert total == len(truth["citations"]) and {r["row"] for r in rows} <= truth["citations"]
    rows, total = client.predict([], "", 1, quality=["citations", "empty"], api_name="/explore")
    assert total == len(truth["citations"] | truth["empty"])
    event, data = call_http(url, "/explore", [[], "", 1, ["pii"]])
    assert event == "complete" and data[1] == len(truth["pii"])
    assert {r["row"] for r in data[0]} <= truth["pii"]


def test_explore_quality_errors_name_the_input(served):
    url, client, _, _ = served
    with pytest.raises(AppError, match="Unknown signal 'typos'"):
        client.predict([], "", 1, ["typos"], api_name="/explore")
    with pytest.raises(AppError, match="quality must be a list of signal names"):
        client.predict([], "", 1, [5], api_name="/explore")
    event, data = call_http(url, "/explore", [[], "", 1, [], "loaded", "extra"])
    assert event == "error" and "/explore takes 3 to 5 input values, in this order: categories, search, page, " \
                                 "quality (optional), source (optional); this call sent more" in data["error"]
    event, data = call_http(url, "/explore", [[], ""])
    assert event == "error" and "this call sent fewer" in data["error"]
    assert client.predict([], "", 1, api_name="/explore")[1] > 0  # still answers
