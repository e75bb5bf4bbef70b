"""In a real browser (Chromium), one app start: reviewing contributions in the Contribute tab (issue 17 §2/§3:
accept one, reject one with a reason, the leaderboard's "accepted" counts it), and two of the Explorer's
layout leftovers of issue 15 (a long record scrolls inside the panel with its bar and Curate buttons in view;
a one-row chart's axis shows whole numbers)."""
import re
import uuid

import pytest

from dolly import contributions as contrib
from dolly.curation import open_store
from tests.browser import WIDE, screenshot, wait_idle
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import make_records, write_jsonl
from tests.test_contribute_browser import select_tab, wait_row, wait_text
from tests.test_explorer_browser import in_viewport, open_page, wait_summary  # noqa: F401

LONG_WORD = "glacierlongrecord"
GOOD = {"context": "", "category": "open_qa"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    records = make_records(40, seed=23)
    # One record far longer than the panel: 60 paragraphs of response.
    records.append({"instruction": f"Describe the {LONG_WORD} in detail.", "context": "", "category": "open_qa",
                    "response": "\n\n".join(f"Paragraph {i}: the ice moves slowly down the valley." for i in range(60))})
    data = write_jsonl(folder / "team.jsonl", records)
    db = folder / "contributions.sqlite3"
    with open_store(db) as store:
        for author, instruction, response in (("ann", "Which river runs through Vienna?", "The Danube."),
                                              ("bob", "What is the capital of Austria?", "Vienna, on the Danube.")):
            contrib.save(store, {**GOOD, "instruction": instruction, "response": response}, key=str(uuid.uuid4()),
                         author=author)
    demo = serve("--data", data, *NO_MODEL, "--curation-db", db)
    yield demo.local_url, db
    demo.close()


def test_a_long_record_keeps_its_actions_in_view_and_a_one_row_chart_counts_whole_rows(open_page, app):
    url, _ = app
    page = open_page(url + f"?tab=explorer&q={LONG_WORD}", WIDE)
    wait_summary(page, r"\b1 matching row")
    # The one row's charts: every tick label of the count axis is a whole number (no 0.2, 0.4…).
    page.wait_for_function("() => document.querySelectorAll('#explorer-charts .vega-embed svg').length >= 4")
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#explorer-charts .vega-embed svg'))
        .every((svg) => svg.querySelectorAll('.role-axis-label text').length > 0)""")
    labels = page.evaluate("""() => Array.from(document.querySelectorAll('#explorer-charts .vega-embed svg'))
        .map((svg) => Array.from(svg.querySelectorAll('.role-axis'))
            .filter((axis) => (axis.getAttribute('aria-label') || '').includes('Y-axis'))
            .flatMap((axis) => Array.from(axis.querySelectorAll('.role-axis-label text')).map((t) => t.textContent)))""")
    assert len(labels) >= 4 and all(labels), labels
    for chart in labels:
        assert all(re.fullmatch(r"\d+", label.replace(",", "")) for label in chart), chart

    wait_idle(page)
    page.locator("#explorer-table tr[data-row] .dolly-open").first.click()
    page.wait_for_function(f"() => document.querySelector('#explorer-row')?.innerText.includes('Paragraph 59')")
    page.wait_for_function("() => !document.querySelector('#explorer-curate-accept button, button#explorer-curate-accept')"
                           "?.disabled")
    # Scroll the record (the wheel over its text, as a reader does): its bar and the Curate buttons stay in view.
    box = page.locator("#explorer-row").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(8):
        page.mouse.wheel(0, 600)
    page.wait_for_function("() => document.querySelector('#explorer-row').scrollTop > 0")
    wait_idle(page)
    assert page.evaluate("() => window.scrollY") == 0  # the record scrolled, not the page
    bar = page.locator("#explorer-row .dolly-nav").bounding_box()
    assert bar["y"] >= 0 and bar["y"] + bar["height"] <= WIDE["height"], bar
    assert in_viewport(page, "#explorer-curate-accept") and in_viewport(page, "#explorer-curate-exclude")
    screenshot(page, "explorer-15-4-long-record-scrolled")


def test_review_accepts_one_rejects_one_with_a_reason_and_the_leaderboard_counts_it(open_page, app):
    url, db = app
    page = open_page(url + "?tab=contribute", WIDE)
    select_tab(page)
    page.locator("#contribute-review-section").get_by_text("Review contributions").first.click()
    wait_text(page, "#contribute-review-who", "Anyone with this page may review")
    page.locator("#contribute-review-next").click()
    wait_text(page, "#contribute-review-item", "Which river runs through Vienna?")
    page.locator("#contribute-review-accept").click()
    wait_text(page, "#contribute-review-message", "accepted")
    wait_text(page, "#contribute-review-item", "What is the capital of Austria?")  # the next one, at once
    page.locator("#contribute-review-reject").click()
    wait_text(page, "#contribute-review-message", "Reason: say why the record is rejected")
    page.locator("#contribute-review-reason textarea").fill("copied from a travel guide")
    page.locator("#contribute-review-reject").click()
    wait_text(page, "#contribute-review-message", "rejected (copied from a travel guide)")
    wait_text(page, "#contribute-review-item", "Nothing to review right now")
    # ann's record accepted: 1 written, 1 accepted; bob's rejected one is left out of the contest.
    wait_row(page, "#contribute-leaderboard", [1, "ann", 1, 1, 0, "open_qa 1"])
    assert "bob" not in page.locator("#contribute-leaderboard").inner_text()
    screenshot(page, "contribute-17-review")
    with open_store(db) as store:
        reviews = {c.instruction: c.review for c in contrib.contributions(store)}
        assert reviews == {"Which river runs through Vienna?": "accepted", "What is the capital of Austria?": "rejected"}
        rejected = next(c for c in contrib.contributions(store) if c.review == "rejected")
        assert contrib.review_log(store, rejected.id)[0][:2] == ("rejected", "copied from a travel guide")
