"""The Chat tab in a real browser (Debian's Chromium via Playwright) against the whole app."""
import pytest
from playwright.sync_api import expect

import app
from tests.conftest import free_port
from tests.tiny_model import save_scripted_model

SCRIPT = "The capital of the river is"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, dolly_jsonl):
    model = save_scripted_model(tmp_path_factory.mktemp("scripted"), " " + SCRIPT)
    args = app.parse_args(["--model", str(model), "--data", str(dolly_jsonl)])
    demo = app.build_app(args)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **app.launch_options(args))
    yield demo.local_url
    demo.close()


def chat_text(page) -> str:
    return page.locator("#chat-chatbot").inner_text()


def wait_for_text(page, selector, text, timeout=30_000):
    page.wait_for_function("([sel, text]) => document.querySelector(sel)?.innerText.includes(text)",
                           arg=[selector, text], timeout=timeout)


def test_type_a_message_and_see_the_streamed_reply(page, app_url):
    page.goto(app_url)
    wait_for_text(page, "#chat-status", "is ready")  # the status line follows the background load
    page.locator("#chat-message textarea").fill("What is the capital of the river?")
    page.locator("#chat-message textarea").press("Enter")
    wait_for_text(page, "#chat-chatbot", SCRIPT)
    text = chat_text(page)
    assert "What is the capital of the river?" in text
    assert "###" not in text and "<|endoftext|>" not in text
    page.screenshot(path="/tmp/chat_tab.png", full_page=True)
    # a second turn: the conversation continues, and the box is ready again
    page.locator("#chat-message textarea").fill("And again?")
    page.locator("#chat-message textarea").press("Enter")
    page.wait_for_function("(s) => document.querySelector('#chat-chatbot').innerText.split(s).length === 3",
                           arg=SCRIPT, timeout=30_000)
    # retry answers the last message again, undo takes the last turn back, clear empties the chat
    chatbot = page.locator("#chat-chatbot")
    chatbot.get_by_role("button", name="Retry").click()
    page.wait_for_function("(s) => document.querySelector('#chat-chatbot').innerText.split(s).length === 3",
                           arg=SCRIPT, timeout=30_000)
    assert chat_text(page).count("And again?") == 1
    chatbot.get_by_role("button", name="Undo").click()
    page.wait_for_function("() => !document.querySelector('#chat-chatbot').innerText.includes('And again?')")
    assert page.locator("#chat-message textarea").input_value() == "And again?"  # back in the box to edit
    assert chat_text(page).count(SCRIPT) == 1
    chatbot.get_by_role("button", name="Clear").click()
    page.wait_for_function("() => !document.querySelector('#chat-chatbot').innerText.includes('capital')")


def test_try_in_chat_brings_the_record_and_its_reference(page, app_url, dolly_records):
    page.goto(app_url)
    page.get_by_role("tab", name="Explorer").click()
    page.wait_for_selector("#explorer-summary")
    page.locator("#explorer-table .virtual-row").first.locator(".body-cell").nth(2).click()
    button = page.locator("#explorer-try-in-chat")
    page.wait_for_function("() => !document.querySelector('#explorer-try-in-chat').disabled")
    button.click()
    page.wait_for_selector("#chat-reference-box", state="visible")
    message = page.locator("#chat-message textarea")
    page.wait_for_function("() => document.querySelector('#chat-message textarea').value.length > 0")
    record = next(r for r in dolly_records if r["instruction"] == message.input_value())
    assert page.locator("#chat-context textarea").input_value() == record["context"]
    reference = page.locator("#chat-reference").inner_text()
    assert "Reference response" in reference and record["response"].split()[0] in reference
    message.press("Enter")
    wait_for_text(page, "#chat-chatbot", SCRIPT)
    assert page.locator("#chat-reference-box").is_visible()  # the reference stays beside the answer
    page.screenshot(path="/tmp/chat_try_in_chat.png", full_page=True)


@pytest.fixture(scope="module")
def looping_url(tmp_path_factory, dolly_jsonl):
    model = save_scripted_model(tmp_path_factory.mktemp("looping"), " The capital of", loop=True,
                                hidden_size=256, num_layers=6, num_heads=8, max_positions=4096)
    args = app.parse_args(["--model", str(model), "--data", str(dolly_jsonl)])
    demo = app.build_app(args)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **app.launch_options(args))
    yield demo.local_url
    demo.close()


def test_stop_button_ends_the_generation(page, looping_url):
    from space.chat import generation_threads

    page.goto(looping_url)
    wait_for_text(page, "#chat-status", "is ready")
    page.get_by_text("Generation settings").first.click()
    max_tokens = page.get_by_label("number input for Max new tokens")
    max_tokens.wait_for(state="visible")
    max_tokens.fill("1024")  # ~150 rounds of the script: long enough to be stopped
    max_tokens.press("Enter")
    expect(page.get_by_label("range slider for Max new tokens")).to_have_value("1024")
    # Follow this reply's own thread: a reply left over from an earlier test may still be finishing.
    before = generation_threads()
    page.locator("#chat-message textarea").fill("Talk forever.")
    page.locator("#chat-message textarea").press("Enter")
    wait_for_text(page, "#chat-chatbot", "The capital of The capital of")
    ours = generation_threads() - before
    assert len(ours) == 1
    page.locator("#chat-message button.stop-button").click()  # Gradio's stop button has no label to find it by
    page.wait_for_selector("#chat-message button.stop-button", state="detached", timeout=10_000)
    thread = ours.pop()
    thread.join(timeout=5)  # it ends at its next token: well within that, even on a busy machine
    assert not thread.is_alive(), "the generate() thread still runs after Stop"
    # What the server sent before Stop may still be on its way to the page: let it land, then the
    # reply must not change any more, and must have stopped far short of 1,024 tokens.
    shown, settled = chat_text(page), 0
    for _ in range(50):
        page.wait_for_timeout(100)
        now = chat_text(page)
        settled = settled + 1 if now == shown else 0
        shown = now
        if settled >= 5:
            break
    page.wait_for_timeout(1000)
    assert chat_text(page) == shown and shown.count("capital") < 100
