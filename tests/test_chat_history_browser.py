"""A chat you never lose (issue 15 §2), in a real browser (Debian's Chromium via Playwright) against the
whole app: conversations kept in the browser's localStorage (gr.BrowserState) come back after a reload,
even mid-reply; a list of them (new, open, rename, delete); export as Markdown and JSON; edit & resend;
the passage a question used, folded under it. Each step waits for a state, never for time.
Screenshots go to tests/screenshots/ (git ignores it)."""
import json

import pytest
from playwright.sync_api import expect

from tests.browser import PHONE, WIDE, axe_violations, screenshot, type_setting
from tests.test_chat_browser import (CONTEXT, SCRIPT, app_url, chat_text, idle, looping_url,  # noqa: F401
                                     scripted_model, send, set_max_new_tokens, settled, wait_replies)

SIZES = pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1440x900", "390x844"])


def open_list(page):
    """Open the 'Your chats' panel (once)."""
    if not page.locator("#chat-list").is_visible():
        page.locator("#chat-chats").get_by_text("Your chats").first.click()
    expect(page.locator("#chat-list")).to_be_visible()


def expect_listed(page, names: list[str]):
    """The list shows exactly `names`, in order: waited for, as the list is drawn after the state it shows
    (after a reload, the browser's copy is read back first)."""
    expect(page.locator("#chat-list label")).to_have_text(names, use_inner_text=True)


def reload(page):
    page.reload()
    expect(page.locator("#chat-status")).to_contain_text("is ready")


def test_a_reload_mid_reply_brings_the_conversation_back_cut_and_marked(open_chat, looping_url):
    page = open_chat(looping_url)
    page.get_by_text("Generation settings").first.click()
    set_max_new_tokens(page, "1024")  # long enough to be cut by the reload
    type_setting(page, page.get_by_label("Seed (-1 = random)"), "4242")
    send(page, "Talk about the river forever.", context="The River Alder runs east to the sea.")
    # Three rounds shown: the browser's copy, written with each piece, holds at least two.
    page.wait_for_function("() => document.querySelector('#chat-chatbot').innerText.includes("
                           "'The capital of The capital of The capital of')")
    reload(page)
    chatbot = page.locator("#chat-chatbot")
    expect(chatbot).to_contain_text("Talk about the river forever.")
    expect(chatbot).to_contain_text("The capital of The capital of")  # the reply as far as it got
    expect(chatbot).to_contain_text("reloaded while this reply was being written")
    expect(page.locator(CONTEXT)).to_have_value("The River Alder runs east to the sea.")
    page.get_by_text("Generation settings").first.click()
    expect(page.get_by_label("Seed (-1 = random)")).to_have_value("4242")
    expect(page.get_by_label("range slider for Max new tokens")).to_have_value("1024")
    open_list(page)
    expect_listed(page, ["Talk about the river forever."])
    # The chat goes on from there, and a second reload does not mark it again.
    idle(page)
    page.get_by_label("number input for Max new tokens").fill("8")
    page.get_by_label("number input for Max new tokens").press("Enter")
    expect(page.get_by_label("range slider for Max new tokens")).to_have_value("8")
    send(page, "Shorter now.")
    page.wait_for_function("() => document.querySelector('#chat-chatbot').innerText.includes('Shorter now.')")
    idle(page)
    reload(page)
    expect(chatbot).to_contain_text("Shorter now.")
    assert chat_text(page).count("reloaded while this reply") == 1


@SIZES
def test_the_list_new_chat_open_rename_delete_and_restore_after_try_in_chat(open_chat, app_url, size):
    page = open_chat(app_url, size)
    send(page, "First question about llamas?", context="Llamas live in the Andes.")
    wait_replies(page, 1)
    idle(page)
    page.locator("#chat-new").click()
    expect(page.locator("#chat-chatbot")).not_to_contain_text("First question")
    expect(page.locator(CONTEXT)).to_have_value("")
    send(page, "Second question about alpacas?")
    wait_replies(page, 1)
    idle(page)
    open_list(page)
    expect(page.locator("#chat-chats")).to_contain_text("Your chats (2)")
    expect_listed(page, ["Second question about alpacas?", "First question about llamas?"])  # newest first
    settled(page)
    screenshot(page, "chat-15-2-list")
    # Open the first again: its messages and its Context come back; writing to it moves it to the top.
    page.locator("#chat-list label").filter(has_text="First question").click()
    expect(page.locator("#chat-chatbot")).to_contain_text("First question about llamas?")
    expect(page.locator(CONTEXT)).to_have_value("Llamas live in the Andes.")
    send(page, "And their wool?")
    wait_replies(page, 2)
    idle(page)
    expect(page.locator("#chat-list label").first).to_have_text("First question about llamas?")
    # Rename; the name stays after a reload.
    page.locator("#chat-title input").fill("Llama notes")
    page.locator("#chat-rename").click()
    expect(page.locator("#chat-list label").first).to_have_text("Llama notes")
    reload(page)
    open_list(page)
    expect_listed(page, ["Llama notes", "Second question about alpacas?"])
    expect(page.locator("#chat-chatbot")).to_contain_text("And their wool?")
    # Delete: the newest left is shown.
    page.locator("#chat-delete").click()
    expect(page.locator("#chat-chats")).to_contain_text("Your chats (1)")
    expect_listed(page, ["Second question about alpacas?"])
    expect(page.locator("#chat-chatbot")).to_contain_text("Second question about alpacas?")
    # Try in chat starts a new chat; Restore opens the one before from the list.
    page.get_by_role("tab", name="Explorer").click()
    page.locator("#explorer-table tr[data-row]").first.click()
    # (On a phone the Explorer hides its wide bar; the open record has its own Try in chat.)
    page.locator("#explorer-try-in-chat:visible, [data-action=try]:visible").first.click()
    wait_replies(page, 1)
    idle(page)
    expect(page.locator("#chat-chatbot")).not_to_contain_text("Second question")
    page.locator("#chat-restore").click()
    expect(page.locator("#chat-chatbot")).to_contain_text("Second question about alpacas?")
    expect(page.locator("#chat-reference-box")).to_be_hidden()
    open_list(page)
    expect(page.locator("#chat-list label")).to_have_count(2)  # the Try-in-chat conversation is kept too


def test_export_markdown_and_json(open_chat, app_url):
    page = open_chat(app_url)
    send(page, "When did the bridge open?", context="The Millbrook Bridge opened in 1891.")
    wait_replies(page, 1)
    idle(page)
    open_list(page)
    with page.expect_download() as download:
        page.locator("#chat-export-md").click()
    assert download.value.suggested_filename == "dolly-when-did-the-bridge-open.md"
    markdown = open(download.value.path(), encoding="utf-8").read()
    assert markdown.startswith("# When did the bridge open?")
    for part in ("**You:**\n\nWhen did the bridge open?", "> The Millbrook Bridge opened in 1891.", f"**Dolly:**\n\n{SCRIPT}"):
        assert part in markdown
    with page.expect_download() as download:
        page.locator("#chat-export-json").click()
    assert download.value.suggested_filename.endswith(".json")
    assert json.load(open(download.value.path(), encoding="utf-8")) == [
        {"role": "system", "content": "The Millbrook Bridge opened in 1891."},
        {"role": "user", "content": "When did the bridge open?"},
        {"role": "assistant", "content": SCRIPT},
    ]


def test_edit_an_earlier_message_and_resend_from_there(open_chat, app_url):
    page = open_chat(app_url)
    send(page, "One: the first question.")
    wait_replies(page, 1)
    idle(page)
    send(page, "Two: the second question.")
    wait_replies(page, 2)
    idle(page)
    chatbot = page.locator("#chat-chatbot")
    chatbot.get_by_role("button", name="Edit").first.click()
    box = chatbot.locator("textarea")
    box.fill("One, edited.")
    chatbot.get_by_role("button", name="Submit").click()
    expect(chatbot).not_to_contain_text("Two: the second question.")
    wait_replies(page, 1)
    idle(page)
    text = chat_text(page)
    assert "One, edited." in text and "One: the first question." not in text
    # What is saved is the edited conversation.
    reload(page)
    expect(chatbot).to_contain_text("One, edited.")
    wait_replies(page, 1)


def test_the_passage_a_question_used_stays_folded_under_it(open_chat, app_url):
    page = open_chat(app_url)
    send(page, "Question on passage A?", context="Passage A is about apples.")
    wait_replies(page, 1)
    idle(page)
    send(page, "Question on passage B?", context="Passage B is about boats.")
    wait_replies(page, 2)
    idle(page)
    page.locator(CONTEXT).fill("Something else entirely.")  # a later change of the box
    chatbot = page.locator("#chat-chatbot")
    titles = chatbot.get_by_text("Passage this question used")
    expect(titles).to_have_count(2)
    expect(chatbot).not_to_contain_text("Passage A is about apples.")  # folded
    titles.first.click()
    expect(chatbot).to_contain_text("Passage A is about apples.")
    # The passage slides open and pushes the second title down: click it once it stands still (on a busy
    # machine a click sent mid-slide landed beside it and nothing opened).
    settled(page)
    titles.last.click()
    expect(chatbot).to_contain_text("Passage B is about boats.")
    assert "Something else entirely." not in chat_text(page)
    text = chat_text(page)
    assert (text.index("Question on passage A?") < text.index("Passage A is about apples.")
            < text.index("Question on passage B?") < text.index("Passage B is about boats."))
    settled(page)
    screenshot(page, "chat-15-2-passage")
    assert axe_violations(page) == []
