"""The Explorer's curation section, its plain functions without a browser (issue 16 §3): the curated view,
the citation fix and its preview, and the words the panel shows."""
import numpy as np

from dolly.curation import RecordState
from explorer.curation_panel import (CURATED, ORIGINAL, as_curated, citation_fixes, edited_fields, fix_preview_md,
                                     shown_choices, status_md, visible_rows)
from explorer.links import build_query, parse_query
from explorer.query import Selection


def selection(rows):
    return Selection((), "", False, "dataset order", np.asarray(rows, np.int64))


STATES = {2: RecordState(2, 1, "excluded", reason="duplicate of row 7", author="ann", at="2026-12-06T12:00:00+00:00"),
          4: RecordState(4, 2, "edited", {"response": "Better."}, author="bob", at="2026-12-06T12:01:00+00:00"),
          5: RecordState(5, 1, "accepted", author="ann", at="2026-12-06T12:02:00+00:00")}


def test_curated_hides_excluded_records_and_shows_edits_original_shows_all_as_loaded():
    assert list(visible_rows(selection([5, 2, 4, 1]), STATES, CURATED).rows) == [5, 4, 1]  # order kept
    assert list(visible_rows(selection([5, 2, 4, 1]), STATES, ORIGINAL).rows) == [5, 2, 4, 1]
    records = [{"row": 4, "response": "Old."}, {"row": 1, "response": "Kept."}]
    assert as_curated(records, STATES, CURATED) == [{"row": 4, "response": "Better."}, {"row": 1, "response": "Kept."}]
    assert as_curated(records, STATES, ORIGINAL) == records
    assert shown_choices({"edited": 1, "excluded": 1, "accepted": 1200}) == \
        [("curated (1 edited · 1 excluded · 1,200 accepted)", CURATED), ("original", ORIGINAL)]


def test_the_citation_fix_changes_only_records_with_markers_and_keeps_earlier_edits():
    records = [{"row": 1, "instruction": "Q", "context": "Paris is in France.[1][2]", "response": "Yes [a]."},
               {"row": 2, "instruction": "Q", "context": "Excluded [3].", "response": "r"},
               {"row": 4, "instruction": "Q", "context": "Rome [citation needed] is old.", "response": "Old."},
               {"row": 6, "instruction": "Q", "context": "No markers here.", "response": "Fine [sic]-free."}]
    edits, changes = citation_fixes(records, STATES)
    assert edits == {1: (0, {"context": "Paris is in France.", "response": "Yes."}),
                     4: (2, {"response": "Better.", "context": "Rome is old."})}  # row 4's edit kept
    assert [before["row"] for before, _ in changes] == [1, 4]
    preview = fix_preview_md(changes)
    assert preview.startswith("**2 records** of the selection would change. The first 2:")
    assert "<del>Paris is in France.[1][2]</del>" in preview and "<ins>Paris is in France.</ins>" in preview
    assert fix_preview_md([]) == "No record of the selection has citation markers: nothing to change."


def test_the_panel_says_what_was_decided_by_whom_and_counts_the_dataset():
    text = status_md(STATES[2], {"edited": 1, "excluded": 1}, [])
    assert text.startswith("**Row 2: excluded: duplicate of row 7** — by ann, 2026-12-06 12:00:00 UTC.")
    assert "In this dataset: 1 edited · 1 excluded · 0 accepted." in text
    assert status_md(RecordState(9), {}, []).startswith("**Row 9: not reviewed yet**")
    assert "&lt;b&gt;" in status_md(RecordState(3, 1, "excluded", reason="<b>x</b>", author="a", at="2026-12-06T12:00:00"),
                                     {}, [])  # what people type is text, not markup
    assert edited_fields({"instruction": "a", "context": "", "response": "b", "category": "open_qa"},
                         {"instruction": "a", "context": "", "response": "c", "category": "open_qa"}) == {"response": "c"}


def test_links_carry_the_original_view_and_default_to_curated():
    assert parse_query("?tab=explorer&shown=original").original is True
    assert parse_query("?tab=explorer").original is False
    assert parse_query("?shown=original").explorer is True
    assert build_query(original=True) == "?tab=explorer&shown=original"
    assert build_query() == "?tab=explorer"


def test_a_redraw_of_the_opened_row_never_finishes_after_a_decision_asked_later(tmp_path):
    """The opened row's redraw (curate_view) and the decisions run one at a time in the order asked (one
    queue group): a redraw asked at opening that finished after Undo put the undone edit back on screen."""
    import app
    from tests.conftest import NO_MODEL
    from tests.dolly_data import make_records, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", make_records(6, seed=3))
    demo = app.build_app(app.parse_args([str(a) for a in ("--data", data, *NO_MODEL, "--curation-db",
                                                          tmp_path / "c.sqlite3")]))
    group = {(fn.name, fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()
             if fn.name in ("curate_view", "save") and fn.fn.__qualname__.startswith("build_explorer_tab.")}
    assert {name for name, _, _ in group} == {"curate_view", "save"}
    assert {(cid, limit) for _, cid, limit in group} == {("explorer-curation", 1)}
