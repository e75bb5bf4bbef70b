"""Issue 17's whole loop, as a team would run it, on one real `python app.py` (a scripted tiny model,
dolly-shaped data, a SQLite store) and real Chromium: two records written in the Contribute tab; two chat
answers rated 👎 with a reason and corrected ("Write a better answer"; one correction has `### End` typed
into it, one a double-click on Save), a 👍 sent with a reason; then `python -m explorer.contributions
export`, `python -m train --data <dolly-shaped file> <export>` for two steps (counted per source, `### End`
trained as text), and `python -m explorer.publish` to the fake Hub."""
import json
import time

import httpx
import pytest
from playwright.sync_api import expect

from dolly import contributions as contrib
from dolly.curation import open_store
from dolly.prompt import END_KEY, add_special_tokens
from tests.browser import screenshot, type_setting, wait_idle
from tests.conftest import start_app, stop_app, train_briefly
from tests.dolly_data import make_records, write_jsonl
from tests.fake_hub import FakeHub
from tests.test_contribute_browser import choose, select_tab, wait_text, wait_value
from tests.test_contributions import run_cli
from tests.test_publish import TOKEN, front_matter, publish
from tests.tiny_model import pythia_tokenizer, save_scripted_model

SCRIPT = " Paris is the capital."
PASSAGE = ("The Danube is the second-longest river in Europe. It flows through ten countries and ends in the "
           "Black Sea after passing Vienna, Bratislava, Budapest and Belgrade.")
WRITTEN = [
    {"category": "open_qa", "instruction": "Why do cats purr when they are content?",
     "response": "Cats purr by vibrating the muscles of the larynx; they do it when relaxed, and also to calm themselves."},
    {"category": "brainstorming", "instruction": "Give me three names for a bakery by the sea.",
     "response": "Salt & Crumb, The Tide Loaf, Harbour Oven."},
]
BETTER_OPEN = "Lisbon is the capital of Portugal.\n### End\nThat marker above is text I typed."
BETTER_CLOSED = "The Danube ends in the Black Sea."


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """(url, folder, model, data, db): the app started once for the whole loop."""
    folder = tmp_path_factory.mktemp("loop")
    model = save_scripted_model(folder / "tiny-dolly", SCRIPT)
    data = write_jsonl(folder / "dolly.jsonl", make_records(40, seed=17))
    db = folder / "contributions.sqlite3"
    process, url = start_app("--model", model, "--data", data, "--curation-db", db,
                             env={"DOLLY_CPU_ENGINE": "torch", "HF_HUB_OFFLINE": "1"})
    try:
        while True:  # until the server answers (a state, not a time: the process must still be alive)
            assert process.poll() is None, "app.py exited while starting"
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url, folder, model, data, db
    finally:
        stop_app(process)


def ask(page, text: str, replies: int, context: str = "") -> None:
    """Send `text`; return once the chat holds `replies` replies and the reply is over."""
    page.locator("#chat-context textarea").fill(context)
    page.locator("#chat-message textarea").fill(text)
    page.locator("#chat-message textarea").press("Enter")
    page.wait_for_function("([s, n]) => document.querySelector('#chat-chatbot').innerText.split(s).length - 1 === n",
                           arg=[SCRIPT.strip(), replies])
    expect(page.locator("#chat-stop")).to_be_hidden()
    expect(page.locator("#chat-send")).to_be_visible()
    wait_idle(page)


def rate_last(page, button: str) -> None:
    """Click 👍 ("Like") or 👎 ("Dislike") under the newest reply; the rating panel opens."""
    page.locator("#chat-chatbot .message-row.bot-row").last.hover()
    page.locator("#chat-chatbot").get_by_label(button, exact=True).last.click()
    expect(page.locator("#chat-feedback")).to_be_visible()
    wait_idle(page)
    # It opens where it can be seen: brought into the window, not left under the chat below the fold.
    page.wait_for_function("""() => { const r = document.getElementById('chat-feedback').getBoundingClientRect();
                                      return r.top >= 0 && r.top < window.innerHeight; }""")


def correct(page, reason: str, better: str, category: str, double: bool = False) -> None:
    page.locator("#chat-feedback-reason textarea").fill(reason)
    page.locator("#chat-feedback-better").click()
    wait_value(page, "#chat-feedback-corrected textarea", SCRIPT.strip())  # the reply, to edit
    wait_value(page, "#chat-feedback-category input", category)  # suggested from the turn's Context
    page.locator("#chat-feedback-corrected textarea").fill(better)
    wait_idle(page)
    save = page.locator("#chat-feedback-save")
    save.dblclick() if double else save.click()
    wait_text(page, "#chat-feedback-said", "your better answer is record")
    expect(page.locator("#chat-feedback")).to_be_hidden()
    wait_idle(page)


def set_seed(page, seed: int) -> None:
    panel = page.locator("#chat-settings-panel")
    if not panel.is_visible():
        page.locator("#chat-settings").get_by_text("Generation settings").click()
    type_setting(page, page.get_by_label("Seed (-1 = random)"), str(seed), confirm="Tab")


def test_write_rate_correct_export_train_publish(loop, open_chat, tmp_path):
    url, folder, model, data, db = loop
    page = open_chat(url)

    # -- the Chat tab: rate and correct two answers ------------------------------------------------------
    ask(page, "What is the capital of Portugal?", 1)
    rate_last(page, "Dislike")
    expect(page.locator("#chat-feedback-heading")).to_contain_text("👎")
    # a correction left as the model wrote it is refused, naming the field
    page.locator("#chat-feedback-better").click()
    wait_value(page, "#chat-feedback-corrected textarea", SCRIPT.strip())
    page.locator("#chat-feedback-save").click()
    wait_text(page, "#chat-feedback-said", "Not saved: corrected:")
    wait_text(page, "#chat-feedback-said", "reply unchanged")
    correct(page, "wrong country", BETTER_OPEN, "open_qa")

    set_seed(page, 4321)
    ask(page, "Where does the Danube end?", 2, PASSAGE)
    rate_last(page, "Dislike")
    correct(page, "the passage says where", BETTER_CLOSED, "closed_qa", double=True)
    screenshot(page, "chat-feedback-saved")

    # The settings change after the reply: its rating keeps those it was written with.
    set_seed(page, 99)
    rate_last(page, "Like")  # a 👍 on the same reply, with a reason and no correction
    expect(page.locator("#chat-feedback-heading")).to_contain_text("👍")
    page.locator("#chat-feedback-reason textarea").fill("short and clear")
    wait_idle(page)
    page.locator("#chat-feedback-send").click()
    wait_text(page, "#chat-feedback-said", "your rating was saved")

    with open_store(db) as store:
        rated = contrib.ratings(store)
        corrections = [c for c in contrib.contributions(store) if c.source == "correction"]
    assert [(r.rating, r.reason, r.prompt, r.context, r.original, r.corrected, r.model_id, r.author)
            for r in rated] == [
        (-1, "wrong country", "What is the capital of Portugal?", "", SCRIPT.strip(), BETTER_OPEN, "tiny-dolly", "anonymous"),
        (-1, "the passage says where", "Where does the Danube end?", PASSAGE, SCRIPT.strip(), BETTER_CLOSED,
         "tiny-dolly", "anonymous"),
        (1, "short and clear", "Where does the Danube end?", PASSAGE, SCRIPT.strip(), "", "tiny-dolly", "anonymous")]
    assert all(set(r.settings) >= {"temperature", "max_new_tokens", "seed"} for r in rated)
    assert rated[1].settings["seed"] == 4321 and rated[2].settings == rated[1].settings  # not 99: set after the reply
    assert rated[0].reply_id != rated[1].reply_id
    assert [(c.instruction, c.context, c.response, c.category) for c in corrections] == [
        ("What is the capital of Portugal?", "", BETTER_OPEN, "open_qa"),
        ("Where does the Danube end?", PASSAGE, BETTER_CLOSED, "closed_qa")]

    # -- the Contribute tab: write two records -----------------------------------------------------------
    select_tab(page)
    for record in WRITTEN:
        choose(page, record["category"])
        page.locator("#contribute-instruction textarea").fill(record["instruction"])
        page.locator("#contribute-response textarea").fill(record["response"])
        wait_idle(page)
        page.wait_for_function("() => !(document.querySelector('#contribute-feedback')?.innerText || '').includes('⛔')")
        page.locator("#contribute-save").click()
        wait_text(page, "#contribute-message", "Saved")
        wait_value(page, "#contribute-instruction textarea", "")
        wait_idle(page)
    with open_store(db) as store:
        records = contrib.records(store)
    assert len(records) == 4 and set(records["response"]) == {BETTER_OPEN, BETTER_CLOSED} | {r["response"] for r in WRITTEN}

    # -- export, train on dolly-shaped data + the export, publish ----------------------------------------
    export = folder / "contributions.jsonl"
    done = run_cli("export", "--db", db, "--output", export)
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(exported) == 4 and BETTER_OPEN in {r["response"] for r in exported}

    train = train_briefly(model, [data, export], tmp_path / "trained")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"[train] mixing 40 records from {data}, 4 records from {export}" in train.stdout
    assert json.loads((tmp_path / "trained" / "run_args.json").read_text())["data"] == [str(data), str(export)]

    real = pythia_tokenizer()  # `### End` typed into a correction is text; only the real end is the marker
    if real is not None:
        from dolly.data import load_records
        from train.data import tokenize_frame

        add_special_tokens(real)
        frame = load_records(str(export), progress=False)
        rows, _ = tokenize_frame(real, frame, 256, progress=False)
        row = next(r for r in rows if frame["response"][r["record"]] == BETTER_OPEN)
        labels = [t for t in row["labels"] if t != -100]
        end_id = real.convert_tokens_to_ids(END_KEY)
        assert labels.count(end_id) == 1 and labels[-1] == end_id
        assert "### End" in real.decode(labels[:-1])

    with FakeHub(TOKEN) as hub:
        published = publish("me/team-dolly", "--db", db, hub_url=hub.url, home=tmp_path / "hf")
    assert published.returncode == 0, published.stderr
    assert TOKEN not in published.stdout + published.stderr
    assert "Published 4 records" in published.stdout
    lines = hub.files["me/team-dolly"]["data/train.jsonl"].decode().splitlines()
    assert {json.loads(line)["response"] for line in lines} == set(records["response"])
    assert front_matter(hub.files["me/team-dolly"]["README.md"])["license"] == "cc-by-sa-3.0"
