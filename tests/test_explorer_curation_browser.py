"""Issue 16 §3/§4 in a real browser: people edit, exclude, accept and undo records in the row viewer;
two editors of one record never overwrite each other silently; a confirmed save survives kill -9; the
curated export trains as it is. Real Chromium, real app, a real SQLite store (its own file per test)."""
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from dolly.curation import dataset_key, open_store
from dolly.data import load_records
from tests.browser import wait_idle
from tests.conftest import NO_MODEL, serve, start_app, train_briefly
from tests.dolly_data import make_records, write_jsonl
from tests.test_explorer_browser import open_page, shot, table_rows, wait_summary  # noqa: F401
from tests.tiny_model import save_tiny_model

STATUS = "#explorer-curate-status"
MESSAGE = "#explorer-curate-message"


@pytest.fixture(scope="module")
def records():
    return make_records(60, seed=16)


@pytest.fixture
def data(tmp_path, records) -> Path:
    return write_jsonl(tmp_path / "team.jsonl", records)


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text])


def open_row(open_page, url: str, row: int):
    page = open_page(f"{url}?tab=explorer&row={row}")
    wait_text(page, STATUS, f"Row {row}:")
    # The quality signals, once computed, redraw the opened row (its Curate section too, reason box included):
    # act on the row after that, not while it can still be redrawn under the test's typing.
    page.wait_for_function("() => !document.body.innerText.includes('computing quality signals')")
    wait_idle(page)
    return page


def edit(page, **fields) -> None:
    page.locator("#explorer-curate-edit").click()
    page.locator("#explorer-edit-form").wait_for()
    page.wait_for_function("() => (document.querySelector('#explorer-edit-instruction textarea')?.value || '') !== ''")
    for name, value in fields.items():
        page.locator(f"#explorer-edit-{name} textarea").fill(value)
    page.locator("#explorer-edit-save").click()


def test_edit_accept_exclude_undo_with_history_and_a_curated_export(open_page, data, records, tmp_path):
    db = tmp_path / "decisions.sqlite3"
    demo = serve("--data", data, *NO_MODEL, "--curation-db", db)
    try:
        page = open_row(open_page, demo.local_url, 3)
        wait_text(page, STATUS, "Row 3: not reviewed yet")
        assert page.locator("#explorer-curate-undo").is_disabled()

        edit(page, response="A better answer, written by a person.")
        wait_text(page, MESSAGE, "Saved: row 3 edited (response)")
        wait_text(page, "#explorer-row", "A better answer, written by a person.")  # the viewer shows the edit
        wait_text(page, STATUS, "In this dataset: 1 edited · 0 excluded · 0 accepted")
        wait_idle(page)
        page.locator("#explorer-curate-accept").click()
        wait_text(page, STATUS, "Row 3: accepted with edits (response)")
        wait_idle(page)
        page.locator("#explorer-curate-exclude").click()  # no reason: refused, saying what to do
        wait_text(page, MESSAGE, "Say why the record is excluded")
        wait_idle(page)
        page.locator("#explorer-curate-reason input").fill("duplicate of row 7")
        page.locator("#explorer-curate-exclude").click()
        wait_text(page, STATUS, "Row 3: excluded: duplicate of row 7")
        wait_idle(page)
        page.locator("#explorer-curate-undo").click()
        wait_text(page, STATUS, "Row 3: accepted with edits (response)")
        page.locator(f"{STATUS} details summary").click()
        wait_text(page, STATUS, "History (4 changes)")
        assert "undo" in page.locator(STATUS).inner_text()
        shot(page, "16-3-curated-row")

        # Another record excluded; the curated export leaves it out and carries the edit.
        wait_idle(page)
        page.goto(f"{demo.local_url}?tab=explorer&row=5")
        wait_text(page, STATUS, "Row 5: not reviewed yet")
        wait_idle(page)
        page.locator("#explorer-curate-reason input").fill("off topic")
        page.locator("#explorer-curate-exclude").click()
        wait_text(page, STATUS, "Row 5: excluded: off topic")
        page.get_by_text("Export the selection").click()
        assert page.locator("#explorer-export-curated input").is_checked()
        with page.expect_download() as download:
            page.locator("#explorer-export").click()
            page.locator("#explorer-file a[download]").first.click()
        exported = tmp_path / "curated.jsonl"
        download.value.save_as(exported)
    finally:
        demo.close()
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(rows) == len(records) - 1
    assert rows[3]["response"] == "A better answer, written by a person." and rows[3]["curation"] == "accepted"
    assert rows[4] == {**records[4], "curation": ""} and rows[5] == {**records[6], "curation": ""}
    # The store kept it all, with who and when.
    with open_store(str(db)) as store:
        key = dataset_key(load_records(str(data), progress=False))
        assert [c.action for c in store.history(key, 3)] == ["edit", "accept", "exclude", "undo"]
        assert {c.author for c in store.history(key, 3)} == {"anonymous"}
    # The curated export trains as it is.
    tiny = save_tiny_model(tmp_path / "tiny", max_positions=256)
    train = train_briefly(tiny, exported, tmp_path / "model")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"[train] {len(rows)} records from {exported}" in train.stdout


def test_a_second_editor_of_the_same_record_is_refused_and_sees_the_newer_text(open_page, data, tmp_path):
    demo = serve("--data", data, *NO_MODEL, "--curation-db", tmp_path / "shared.sqlite3")
    try:
        first, second = open_row(open_page, demo.local_url, 9), open_row(open_page, demo.local_url, 9)
        # Another record saved meanwhile does not stand in anyone's way.
        other = open_row(open_page, demo.local_url, 10)
        edit(other, response="Row ten, improved.")
        wait_text(other, MESSAGE, "Saved: row 10 edited (response)")
        # Both open the form on row 9; the first saves, then the second.
        second.locator("#explorer-curate-edit").click()
        second.locator("#explorer-edit-form").wait_for()
        edit(first, response="The first editor's answer.")
        wait_text(first, MESSAGE, "Saved: row 9 edited (response)")
        second.locator("#explorer-edit-response textarea").fill("The second editor's answer.")
        second.locator("#explorer-edit-save").click()
        wait_text(second, MESSAGE, "Row 9 was changed by anonymous at")
        wait_text(second, MESSAGE, "since you opened it")
        # The newer text is shown above; the second editor's own text is still in the form.
        wait_text(second, "#explorer-row", "The first editor's answer.")
        assert second.locator("#explorer-edit-response textarea").input_value() == "The second editor's answer."
        shot(second, "16-3-conflict")
        # Having seen it, a second Save is a deliberate choice, and is kept (as the newer change).
        wait_idle(second)
        second.locator("#explorer-edit-save").click()
        wait_text(second, MESSAGE, "Saved: row 9 edited (response)")
        wait_text(second, "#explorer-row", "The second editor's answer.")
        wait_text(second, STATUS, "In this dataset: 2 edited")
    finally:
        demo.close()


def serving(process, url: str) -> str:
    """`url` once `python app.py` answers there (a state, not a time)."""
    while True:
        assert process.poll() is None, "app.py exited before it served"
        try:
            if httpx.get(url + "config", timeout=30).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def test_a_saved_edit_survives_kill_9_of_the_app(open_page, data, tmp_path):
    db = tmp_path / "durable.sqlite3"
    process, url = start_app("--data", data, *NO_MODEL, "--curation-db", db)
    try:
        page = open_row(open_page, serving(process, url), 11)
        edit(page, instruction="Rewritten instruction that must survive.")
        wait_text(page, MESSAGE, "Saved: row 11 edited (instruction)")
        process.send_signal(signal.SIGKILL)  # right after the confirmed save
        process.wait(timeout=30)
        process, url = start_app("--data", data, *NO_MODEL, "--curation-db", db)
        page = open_row(open_page, serving(process, url), 11)
        wait_text(page, STATUS, "Row 11: edited (instruction)")
        wait_text(page, "#explorer-row", "Rewritten instruction that must survive.")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_curated_view_hides_excluded_records_and_the_citation_fix_is_previewed_then_applied(open_page, tmp_path):
    records = make_records(30, seed=17)
    for row in (2, 5, 8):
        records[row] = {**records[row], "context": f"A passage [{row}] with a marker.[citation needed]"}
    data = write_jsonl(tmp_path / "cited.jsonl", records)
    demo = serve("--data", data, *NO_MODEL, "--curation-db", tmp_path / "view.sqlite3")
    try:
        page = open_row(open_page, demo.local_url, 3)
        page.locator("#explorer-curate-reason input").fill("off topic")
        page.locator("#explorer-curate-exclude").click()
        wait_text(page, STATUS, "Row 3: excluded: off topic")
        wait_summary(page, r"^29 matching rows of 30")  # curated (the default): the excluded record is hidden
        assert 3 not in table_rows(page)
        wait_text(page, "#explorer-shown", "0 edited · 1 excluded · 0 accepted")
        # The original records, as loaded, with a link of their own.
        wait_idle(page)
        page.locator("#explorer-shown input[value=original]").check()
        wait_summary(page, r"^30 matching rows of 30")
        assert 3 in table_rows(page)
        page.wait_for_function("() => location.search.includes('shown=original')")
        page = open_page(demo.local_url + "?tab=explorer&shown=original")
        wait_summary(page, r"^30 matching rows of 30")
        assert page.locator("#explorer-shown input[value=original]").is_checked()

        # The citation fix: previewed (how many, before and after), nothing saved until applied.
        page = open_page(demo.local_url + "?tab=explorer")
        wait_summary(page, r"^29 matching rows")
        page.get_by_text("Fix the selection").click()
        page.locator("#explorer-fix-preview").click()
        wait_text(page, "#explorer-fix-result", "3 records of the selection would change")
        assert "A passage [2] with a marker.[citation needed]" in page.locator("#explorer-fix-result").inner_text()
        shot(page, "16-3-fix-preview")
        with open_store(str(tmp_path / "view.sqlite3")) as store:
            assert store.counts(dataset_key(load_records(str(data), progress=False)))["edited"] == 0
        page.get_by_role("button", name="Apply to 3 records").click()
        wait_text(page, "#explorer-fix-result", "Removed citation markers from 3 records")
        wait_text(page, "#explorer-shown", "3 edited · 1 excluded")
        page = open_row(open_page, demo.local_url, 5)
        wait_text(page, STATUS, "Row 5: edited (context)")
        wait_text(page, "#explorer-row", "A passage with a marker.")
        wait_idle(page)
        page.locator("#explorer-curate-undo").click()  # one record's fix reverted
        wait_text(page, STATUS, "Row 5: not reviewed yet")
        wait_text(page, "#explorer-row", "A passage [5] with a marker.[citation needed]")
    finally:
        demo.close()
