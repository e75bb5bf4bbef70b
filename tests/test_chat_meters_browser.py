"""Speed and room, visible (issue 15 §3) in a real browser: a reply's tokens and tokens/s in small
print once it is written, and a meter under the message box that counts the next prompt against the
window and warns before sending, not after. Each step waits for a state, never for time."""
import re

from playwright.sync_api import expect

from tests.browser import PHONE, screenshot
from tests.test_chat_browser import (CONTEXT, MESSAGE, app_url, idle, scripted_model,  # noqa: F401
                                     send, settled, wait_replies)


def test_a_reply_shows_its_tokens_and_speed(open_chat, app_url, scripted_model):
    page = open_chat(app_url)
    stats = page.locator("#chat-stats")
    expect(stats).to_have_text("")
    send(page, "What is the capital of the river?")
    wait_replies(page, 1)
    idle(page)
    script_tokens = len((scripted_model / "script_ids.txt").read_text().split())
    # The script, then Dolly's end marker: every token the model wrote is counted.
    expect(stats).to_have_text(re.compile(rf"This reply: {script_tokens + 1} tokens · [\d,.]+ tokens/s · [\d,.]+ s"))
    assert page.locator("#chat-stats small").count() == 1  # small print


def test_the_meter_counts_the_prompt_and_warns_before_sending(open_chat, app_url):
    page = open_chat(app_url)
    meter = page.locator("#chat-meter")
    # The scripted model's window is 512 tokens; 256 are kept for the reply by default.
    expect(meter).to_have_text(re.compile(r"Prompt: \d+ of 256 tokens \(512-token window, 256 kept for the reply\)"))
    first = int(re.search(r"Prompt: (\d+)", meter.inner_text()).group(1))
    page.locator(MESSAGE).fill("A question of a few more words than one?")
    expect(meter).not_to_have_text(re.compile(rf"Prompt: {first} of"))
    # A passage too long for the window: the warning is there before anything is sent.
    page.locator(CONTEXT).fill("The river runs past the old mill and under the bridge. " * 60)
    expect(meter).to_contain_text("If sent now: The Context was too long")
    expect(meter.locator("strong")).to_be_visible()
    assert "A question of a few more words" not in page.locator("#chat-chatbot").inner_text()
    box, meter_box = page.locator("#chat-message").bounding_box(), meter.bounding_box()
    assert meter_box["y"] >= box["y"] + box["height"] - 1  # under the message box
    settled(page)
    screenshot(page, "chat-15-3-meter-warns")
    # Shortened, the warning goes.
    page.locator(CONTEXT).fill("The river runs past the old mill.")
    expect(meter).not_to_contain_text("If sent now")
    # After a reply the meter counts the conversation too.
    before = int(re.search(r"Prompt: (\d+)", meter.inner_text()).group(1))
    page.locator(MESSAGE).press("Enter")
    wait_replies(page, 1)
    idle(page)
    page.locator(MESSAGE).fill("A question of a few more words than one?")
    page.wait_for_function("n => { const m = /Prompt: (\\d+)/.exec(document.querySelector('#chat-meter').innerText);"
                           " return m && +m[1] > n; }", arg=before)


def test_the_meter_on_a_phone(open_chat, app_url):
    page = open_chat(app_url, PHONE)
    expect(page.locator("#chat-meter")).to_contain_text("Prompt:")
    send(page, "What is the capital?")
    wait_replies(page, 1)
    idle(page)
    expect(page.locator("#chat-stats")).to_contain_text("tokens/s")
    settled(page)
    screenshot(page, "chat-15-3-phone")
