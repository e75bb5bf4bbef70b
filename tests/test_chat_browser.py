"""The Chat tab in a real browser (Debian's Chromium via Playwright) against the whole app.

Every step waits for a state (a text, a visible button, a value), never for time, so a busy machine
only makes it slower: a reply is over when Send is back in place of Stop. Screenshots of the key
states, at 1440×900 and 390×844, go to tests/screenshots/ (git ignores it) for anyone to look at.
"""
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from space.chat import MAX_INPUT_CHARS
from tests.conftest import serve
from tests.browser import PHONE, WIDE, axe_violations, screenshot, type_setting
from tests.tiny_model import save_scripted_model

SCRIPT = "The capital of the river is"
MESSAGE = "#chat-message textarea"
CONTEXT = "#chat-context textarea"
SIZES = pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1440x900", "390x844"])


@pytest.fixture(scope="module")
def scripted_model(tmp_path_factory):
    return save_scripted_model(tmp_path_factory.mktemp("scripted"), " " + SCRIPT)


@pytest.fixture(scope="module")
def app_url(scripted_model, dolly_jsonl):
    demo = serve("--model", scripted_model, "--data", dolly_jsonl)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def failed_url(tmp_path_factory, dolly_jsonl):
    demo = serve("--model", tmp_path_factory.mktemp("empty") / "no-such-checkpoint", "--data", dolly_jsonl)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def looping_url(tmp_path_factory, dolly_jsonl):
    model = save_scripted_model(tmp_path_factory.mktemp("looping"), " The capital of", loop=True,
                                hidden_size=256, num_layers=6, num_heads=8, max_positions=4096)
    demo = serve("--model", model, "--data", dolly_jsonl)
    yield demo.local_url
    demo.close()


def shot(page, name: str) -> Path:
    return screenshot(page, f"chat-{name}")


def chat_text(page) -> str:
    return page.locator("#chat-chatbot").inner_text()


def idle(page):
    """Wait until no reply is being written: Send is back, Stop gone."""
    expect(page.locator("#chat-send")).to_be_visible()
    expect(page.locator("#chat-stop")).to_be_hidden()


def settled(page):
    """Wait until the chat's transitions are over (a notice or a passage slides open), e.g. before a screenshot
    or a click on what a transition moves. Svelte 5 runs them as Web Animations, older ones as inline styles;
    endless ones (a spinner) are not waited for."""
    page.wait_for_function("""() => {
        const chat = document.querySelector('#chat-chatbot');
        return !chat.querySelector('[style*=animation]') && chat.getAnimations({subtree: true}).every(
            a => a.playState !== 'running' || a.effect.getTiming().iterations === Infinity);
    }""")


def send(page, text, context=None):
    if context is not None:
        page.locator(CONTEXT).fill(context)
    page.locator(MESSAGE).fill(text)
    page.locator(MESSAGE).press("Enter")


def replies(page) -> int:
    return chat_text(page).count(SCRIPT)


def wait_replies(page, n):
    page.wait_for_function("([s, n]) => document.querySelector('#chat-chatbot').innerText.split(s).length - 1 === n",
                           arg=[SCRIPT, n])


# -- point 9: first impression ------------------------------------------------------------------------
@SIZES
def test_first_impression_says_what_this_is_and_how_to_start(open_chat, app_url, scripted_model, size):
    page = open_chat(app_url, size)
    page.get_by_text("About this chat").click()  # the intro is folded beside the status line
    intro = page.locator("#chat-intro")
    expect(intro).to_contain_text("Dolly 2.0")
    expect(intro).to_contain_text(scripted_model.name)  # which model
    hrefs = intro.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert "https://huggingface.co/datasets/databricks/databricks-dolly-15k" in hrefs
    assert any("huggingface.co/databricks/dolly-v2" in href for href in hrefs)
    # The status line names the model; its path sits only in the small details line.
    status = page.locator("#chat-status")
    first_line = status.locator("p").first.inner_text()
    assert scripted_model.name in first_line and str(scripted_model) not in first_line
    expect(status.locator("small")).to_contain_text(str(scripted_model))
    # The empty chat: a hint, and examples that run on click.
    chatbot = page.locator("#chat-chatbot")
    expect(chatbot).to_contain_text("Ask Dolly something")
    assert chatbot.locator("button.example").count() == 8
    # No label box on the chat that could sit over its messages.
    assert chatbot.locator("label, .block-label").filter(has_text="Dolly").count() == 0
    # The Context box sits with the message box it belongs to (right under it), not above the conversation.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # the message box in its place in the page
    message_box, context_box = page.locator("#chat-message").bounding_box(), page.locator("#chat-context").bounding_box()
    chat_box = chatbot.bounding_box()
    assert message_box["y"] > chat_box["y"] + chat_box["height"] - 1 and context_box["y"] > chat_box["y"]
    assert -2 < context_box["y"] - (message_box["y"] + message_box["height"]) < 120
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "p9-first-impression")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    shot(page, "p9-first-impression-bottom")


def test_an_example_runs_on_click(open_chat, app_url):
    page = open_chat(app_url)
    page.locator("#chat-chatbot button.example").filter(has_text="(with a passage)").first.click()
    wait_replies(page, 1)
    idle(page)
    assert "When was the bridge opened" in chat_text(page)
    assert "Millbrook Bridge" in page.locator(CONTEXT).input_value()  # its passage went into Context


# -- the everyday flow: reply, second turn, retry, undo, clear -----------------------------------------
def test_reply_retry_undo_and_clear(open_chat, app_url):
    page = open_chat(app_url)
    send(page, "What is the capital of the river?")
    wait_replies(page, 1)
    idle(page)
    text = chat_text(page)
    assert "What is the capital of the river?" in text
    assert "###" not in text and "<|endoftext|>" not in text
    send(page, "And again?")
    wait_replies(page, 2)
    idle(page)
    chatbot = page.locator("#chat-chatbot")
    # retry answers the last message again
    chatbot.get_by_role("button", name="Retry").last.click()
    idle(page)
    wait_replies(page, 2)
    assert chat_text(page).count("And again?") == 1
    # undo takes the last turn back, and its message goes back in the box to edit
    chatbot.get_by_role("button", name="Undo").last.click()
    expect(page.locator(MESSAGE)).to_have_value("And again?")
    wait_replies(page, 1)
    assert "And again?" not in chat_text(page)
    # clear empties the chat, the Context and the reference with it
    page.locator(CONTEXT).fill("A passage about rivers.")
    chatbot.get_by_role("button", name="Clear").click()
    expect(chatbot).not_to_contain_text("capital")
    expect(page.locator(CONTEXT)).to_have_value("")


# -- point 2: an error never locks the chat -------------------------------------------------------------
def assert_usable_after_error(page, typed, reason):
    """The reason stays in the conversation, the text is back in the box, the box and Send work."""
    notice = page.locator("#chat-chatbot").get_by_text("Could not answer").last
    expect(notice).to_be_visible()
    expect(page.locator("#chat-chatbot")).to_contain_text(reason)
    expect(page.locator(MESSAGE)).to_have_value(typed)
    expect(page.locator(MESSAGE)).to_be_editable()
    idle(page)
    settled(page)
    expect(page.locator("#chat-chatbot").get_by_text(reason).last).to_be_visible()
    assert page.locator("#chat-chatbot .error, #chat-chatbot .status-tracker.error").count() == 0


@SIZES
def test_a_context_over_the_limit_is_explained_in_the_chat_and_nothing_locks(open_chat, app_url, size):
    page = open_chat(app_url, size)
    typed = "Summarize this passage."
    send(page, typed, context="x" * (MAX_INPUT_CHARS + 10))
    assert_usable_after_error(page, typed, f"the limit is {MAX_INPUT_CHARS:,}")
    shot(page, "p2-context-too-long")
    # Long after any toast would have faded, the reason is still there.
    page.locator(CONTEXT).fill("Rivers flow to the sea.")
    page.locator(MESSAGE).press("Enter")  # the same text, sent again: it works now
    wait_replies(page, 1)
    idle(page)
    expect(page.locator("#chat-chatbot")).to_contain_text(f"the limit is {MAX_INPUT_CHARS:,}")
    assert chat_text(page).count(typed) == 1  # the failed attempt is not a turn of the conversation
    settled(page)
    shot(page, "p2-recovered")


@SIZES
def test_without_a_model_the_box_says_so_and_sending_explains(open_chat, failed_url, size):
    page = open_chat(failed_url, size, status="could not be loaded")
    expect(page.locator(MESSAGE)).to_have_attribute("placeholder", re.compile("could not be loaded"))
    for attempt in range(2):  # every time, not only once
        send(page, "Hello?")
        assert_usable_after_error(page, "Hello?", "Model folder not found")
    shot(page, "p2-model-failed")


# -- points 10 and 11: max new tokens bounded, notices never stack, a stopped reply says so -------------
def test_max_new_tokens_is_bounded_by_the_model_and_nothing_stacks(open_chat, app_url):
    page = open_chat(app_url)
    page.get_by_text("Generation settings").first.click()
    number = page.get_by_label("number input for Max new tokens")
    expect(number).to_have_attribute("max", "256")  # half the scripted model's 512-token window
    number.fill("256")
    number.press("Enter")
    for n in range(1, 4):
        send(page, f"Question {n}?")
        wait_replies(page, n)
        idle(page)
    assert "Note" not in chat_text(page)  # nothing was lowered, so nothing to say
    assert page.locator(".toast-body, .toast-wrap .toast").count() == 0


def set_max_new_tokens(page, value: str) -> None:
    """Type `value` into Max new tokens' box and confirm it, until the slider shows it."""
    type_setting(page, page.get_by_label("number input for Max new tokens"), value,
                 shown=page.get_by_label("range slider for Max new tokens"))


def test_stop_ends_the_generation_and_marks_the_reply(open_chat, looping_url):
    from space.chat import generation_threads

    page = open_chat(looping_url)
    page.get_by_text("Generation settings").first.click()
    set_max_new_tokens(page, "1024")  # ~150 rounds of the script: long enough to be stopped
    # Follow this reply's own thread: a reply left over from an earlier test may still be finishing.
    before = generation_threads()
    send(page, "Talk forever.")
    page.wait_for_function("() => document.querySelector('#chat-chatbot').innerText.includes('The capital of The capital of')")
    ours = generation_threads() - before
    assert len(ours) == 1
    # Keyboard alone: from the message box, Tab reaches Stop (Send is hidden meanwhile).
    page.locator(MESSAGE).focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "chat-stop"
    page.keyboard.press("Enter")
    idle(page)
    thread = ours.pop()
    thread.join(timeout=10)  # it ends at its next token: well within that, even on a busy machine
    assert not thread.is_alive(), "the generate() thread still runs after Stop"
    expect(page.locator("#chat-chatbot").get_by_text("You stopped this reply")).to_be_visible()
    assert chat_text(page).count("capital") < 300  # far short of 1,024 tokens
    settled(page)
    shot(page, "p11-stopped")


# -- point 12: Try in chat ------------------------------------------------------------------------------
@SIZES
def test_try_in_chat_starts_a_clean_comparison(open_chat, app_url, dolly_records, size):
    page = open_chat(app_url, size)
    send(page, "An earlier question.")
    wait_replies(page, 1)
    idle(page)
    page.get_by_role("tab", name="Explorer").click()
    page.locator("#explorer-table tr[data-row]").first.wait_for()
    page.locator("#explorer-table tr[data-row]").first.click()
    # Beside the table on a wide screen; on a phone, the one under the opened row.
    button = page.locator("#explorer-try-in-chat:visible, .dolly-detail [data-action=try]:visible").first
    expect(button).to_be_enabled()
    button.click()
    # A fresh conversation: the record's instruction is sent at once and answered.
    expect(page.locator("#chat-reference-box")).to_be_visible()
    wait_replies(page, 1)
    idle(page)
    text = chat_text(page)
    assert "An earlier question." not in text
    record = next(r for r in dolly_records if r["instruction"] and r["instruction"].split("\n")[0] in text)
    assert page.locator(CONTEXT).input_value() == record["context"]
    reference = page.locator("#chat-reference").inner_text()
    assert "Reference response" in reference and record["response"].split()[0] in reference
    # The reference and the answer are in view together, side by side (under it on a phone).
    settled(page)
    shot(page, "p12-try-in-chat")
    chat_box = page.locator("#chat-chatbot").bounding_box()
    ref_box = page.locator("#chat-reference-box").bounding_box()
    viewport = page.viewport_size
    if size == WIDE:
        assert ref_box["x"] > chat_box["x"] + chat_box["width"] - 1 and abs(ref_box["y"] - chat_box["y"]) < 5
        assert -2 < chat_box["y"] and chat_box["y"] + chat_box["height"] <= viewport["height"] + 2  # wholly in view
    else:
        assert -2 < ref_box["y"] - (chat_box["y"] + chat_box["height"]) < 40  # (sub-pixel layout)
        # The answer at the top (as far as the page below it lets it scroll), the reference starting in view.
        assert -2 < chat_box["y"] < viewport["height"] / 3 and ref_box["y"] < viewport["height"]
    # The earlier conversation can be restored.
    page.locator("#chat-restore").click()
    expect(page.locator("#chat-chatbot")).to_contain_text("An earlier question.")
    expect(page.locator("#chat-restore")).to_be_hidden()


def test_clear_after_try_in_chat_clears_reference_and_context(open_chat, app_url):
    page = open_chat(app_url)
    page.get_by_role("tab", name="Explorer").click()
    page.locator("#explorer-table tr[data-row]").nth(2).click()
    expect(page.locator("#explorer-try-in-chat")).to_be_enabled()
    page.locator("#explorer-try-in-chat").click()
    wait_replies(page, 1)
    idle(page)
    page.locator(CONTEXT).fill("something the record brought")  # whatever it holds now
    page.locator("#chat-chatbot").get_by_role("button", name="Clear").click()
    expect(page.locator("#chat-reference-box")).to_be_hidden()
    expect(page.locator(CONTEXT)).to_have_value("")


# -- point 13: accessibility -----------------------------------------------------------------------------
def test_no_serious_accessibility_violations_empty_and_with_a_reply(open_chat, app_url):
    page = open_chat(app_url)
    assert axe_violations(page) == []
    send(page, "What is the capital?")
    wait_replies(page, 1)
    idle(page)
    assert axe_violations(page) == []
    page.get_by_text("Generation settings").first.click()
    expect(page.get_by_label("number input for Max new tokens")).to_be_visible()
    assert axe_violations(page) == []


def test_keyboard_alone_sends_and_runs_an_example(open_chat, app_url):
    page = open_chat(app_url)
    # From the top of the page, Tab reaches an example (and Enter runs it) ...
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('example')"):
            break
    else:
        pytest.fail("Tab never reached an example")
    page.keyboard.press("Enter")
    wait_replies(page, 1)
    idle(page)
    # ... and the message box, where Enter sends.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#chat-message') !== null"):
            break
    else:
        pytest.fail("Tab never reached the message box")
    page.keyboard.type("Typed without a mouse.")
    page.keyboard.press("Enter")
    wait_replies(page, 2)
    idle(page)
    assert "Typed without a mouse." in chat_text(page)


def tab_to(page, predicate: str, what: str, presses: int = 60) -> None:
    """Press Tab until `predicate` (JS, of document.activeElement) holds; fail naming `what` if it never does."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!({predicate}); }})()"):
            return
    pytest.fail(f"Tab never reached {what}")


def test_keyboard_alone_retries_undoes_and_clears(open_chat, app_url):
    page = open_chat(app_url)
    page.locator(MESSAGE).focus()
    page.keyboard.type("First, by keyboard.")
    page.keyboard.press("Enter")
    wait_replies(page, 1)
    idle(page)
    page.keyboard.type("Second, by keyboard.")
    page.keyboard.press("Enter")
    wait_replies(page, 2)
    idle(page)
    button = "el.closest('#chat-chatbot') && el.getAttribute('aria-label') === '{}'"
    page.locator(MESSAGE).focus()
    tab_to(page, button.format("Retry"), "Retry")
    page.keyboard.press("Enter")
    idle(page)
    wait_replies(page, 2)
    assert chat_text(page).count("Second, by keyboard.") == 1
    page.locator(MESSAGE).focus()
    tab_to(page, button.format("Undo"), "Undo")
    page.keyboard.press("Enter")
    expect(page.locator(MESSAGE)).to_have_value("Second, by keyboard.")
    wait_replies(page, 1)
    page.locator(MESSAGE).focus()
    tab_to(page, button.format("Clear"), "Clear")
    page.keyboard.press("Enter")
    expect(page.locator("#chat-chatbot")).not_to_contain_text("First, by keyboard.")


def test_no_serious_accessibility_violations_on_a_phone(open_chat, app_url):
    page = open_chat(app_url, size=PHONE)
    assert axe_violations(page) == []
    send(page, "What is the capital?")
    wait_replies(page, 1)
    idle(page)
    assert axe_violations(page) == []
