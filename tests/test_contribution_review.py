"""Reviewing contributions (issue 17 §2/§3), without a browser: the rule of who may review, a rejection's
reason kept in the review log, the queue, and the leaderboard's "accepted" counting the decisions; and the
Explorer's one-row charts' axes (issue 15 §7)."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from dolly import contributions as contrib
from dolly.curation import ANONYMOUS, open_store
from explorer import review
from explorer.charts import WHOLE_TICKS, count_axis, length_histogram

GOOD = {"instruction": "What is the tallest mountain on Earth?", "context": "",
        "response": "Mount Everest, 8,849 metres above sea level.", "category": "open_qa"}


def _save(store, author, instruction):
    return contrib.save(store, {**GOOD, "instruction": instruction}, key=str(uuid.uuid4()), author=author).contribution


@pytest.mark.parametrize("location", ["sqlite", "postgresql"], indirect=True)
def test_review_rule_reason_queue_and_leaderboard(location):
    me = f"rv{uuid.uuid4().hex[:8]}"
    with open_store(location) as store:
        first = _save(store, f"{me}-ann", "Which river runs through Vienna, please?")
        second = _save(store, f"{me}-ann", "Which is the longest river of Europe?")
        theirs = _save(store, f"{me}-bob", "Name the highest mountain of the Alps.")
        queue = [c.id for c in contrib.to_review(store, limit=10_000)]
        assert {first.id, second.id, theirs.id} <= set(queue) and queue == sorted(queue)

        # a named writer never reviews their own record; the queue skips it for them
        said, saved = review.decide(store, first.id, "accepted", "", f"{me}-ann")
        assert not saved and "is yours" in said and contrib.get(store, first.id).review == ""
        own = review.next_for(store, f"{me}-ann")
        assert own is None or own.author != f"{me}-ann"
        # a rejection needs a reason, named in the message; nothing is saved without it
        said, saved = review.decide(store, second.id, "rejected", "  ", f"{me}-cy")
        assert not saved and said.startswith("Reason:") and contrib.get(store, second.id).review == ""
        assert review.decide(store, None, "accepted", "", f"{me}-cy") == ("Press *Show the next record to review* "
                                                                          "first.", False)

        assert review.decide(store, first.id, "accepted", "", f"{me}-cy")[1]
        said, saved = review.decide(store, second.id, "rejected", "copied from a website", f"{me}-cy")
        assert saved and "copied from a website" in said
        assert review.decide(store, theirs.id, "accepted", "", ANONYMOUS)[1]  # without --auth anyone reviews
        assert contrib.review_log(store, second.id)[0][:3] == ("rejected", "copied from a website", f"{me}-cy")
        assert not {first.id, second.id, theirs.id} & {c.id for c in contrib.to_review(store, limit=10_000)}

        board = {(s.author, s.category): (s.written, s.accepted) for s in contrib.leaderboard(store)
                 if s.author.startswith(me)}
        assert board == {(f"{me}-ann", "open_qa"): (1, 1), (f"{me}-bob", "open_qa"): (1, 1)}  # the rejected left out


def test_who_may_review_is_said():
    assert "signed-in" in review.who_may_review_md(True)
    assert "Anyone" in review.who_may_review_md(False) and "--auth" in review.who_may_review_md(False)


def test_count_axes_reach_whole_ticks():
    # One row (or a category of one): the axis goes to 10, so Vega's ticks are 0, 2, 4… not 0.2, 0.4.
    assert count_axis(length_histogram(np.array([42]))["rows"]) == [0, WHOLE_TICKS]
    assert count_axis([0, 1, 0]) == [0, WHOLE_TICKS] and count_axis([]) == [0, WHOLE_TICKS]
    assert count_axis([3, WHOLE_TICKS]) == [0, None]  # large enough: Vega's own rounded top


def test_the_contribute_form_is_checked_by_one_listener_whose_last_answer_is_for_the_newest_values(tmp_path):
    """Every field's change goes to one listener (trigger_mode always_last): its last answer is for the form's
    newest values. With a listener a field, the Instruction's check could be answered after the Response's,
    leaving a stale ⛔ and a stored draft without its response (a CI run of test_contribution_loop_browser)."""
    import app
    from tests.conftest import NO_MODEL
    from tests.dolly_data import make_records, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", make_records(6, seed=3))
    demo = app.build_app(app.parse_args([str(a) for a in ("--data", data, *NO_MODEL, "--curation-db",
                                                          tmp_path / "c.sqlite3")]))
    checks = [fn for fn in demo.fns.values() if fn.name == "edited" and fn.fn.__qualname__.startswith("build_contribute_tab.")]
    assert len(checks) == 1
    assert checks[0].trigger_mode == "always_last"
    fields = {"contribute-category", "contribute-instruction", "contribute-context", "contribute-response",
              "contribute-license", "contribute-reason"}
    triggered = {(demo.blocks[target].elem_id, event) for target, event in checks[0].targets}
    assert triggered == {(field, "change") for field in fields}
