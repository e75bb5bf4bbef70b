"""The Chat tab's layout in a real browser (issue 15 §4 and §7): the conversation fills the window with the
message box at its bottom edge (ChatGPT's layout), also on a phone right after "Try in chat"; the status
and the folded intro on one line, in plain words; the generation settings as a panel of labelled rows
that scrolls into view; the Enter/Shift+Enter hint only where there is a keyboard.

One app for the module; each check waits for a state, never for time. Screenshots (after) of each state go
to tests/screenshots/chat-layout-*.
"""
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser import PHONE, WIDE, screenshot
from tests.conftest import serve
from tests.tiny_model import save_scripted_model

SIZES = pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1440x900", "390x844"])
MESSAGE = "#chat-message textarea"
SCRIPT = "The capital of the river is"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, dolly_jsonl):
    model = save_scripted_model(tmp_path_factory.mktemp("scripted"), " " + SCRIPT)
    demo = serve("--model", model, "--data", dolly_jsonl)
    yield demo.local_url
    demo.close()


def box(page, selector) -> dict:
    return page.locator(selector).first.bounding_box()


def assert_box_at_the_bottom(page):
    """The message box is in the window, in the dock at the window's bottom edge (under the box: the context
    meter and, with a keyboard, the keys hint)."""
    height = page.viewport_size["height"]
    message = box(page, MESSAGE)
    assert message["y"] >= 0 and message["y"] + message["height"] <= height, (message, height)
    dock = box(page, "#chat-dock")
    assert abs(height - (dock["y"] + dock["height"])) <= 2, (dock, height)
    assert dock["height"] <= 0.4 * height, (dock, height)  # the conversation keeps most of the window


@SIZES
def test_the_conversation_fills_the_window_and_the_box_keeps_to_its_bottom(open_chat, app_url, size):
    page = open_chat(app_url + "?tab=chat", size)
    # The conversation takes the window's height: a window 300 px taller gives it the 300 px.
    before = box(page, "#chat-chatbot")["height"]
    page.set_viewport_size({"width": size["width"], "height": size["height"] + 300})
    page.wait_for_function("h => document.querySelector('#chat-chatbot').getBoundingClientRect().height >= h + 295",
                           arg=before)
    page.set_viewport_size(size)
    page.wait_for_function("h => document.querySelector('#chat-chatbot').getBoundingClientRect().height <= h + 5",
                           arg=before)
    # The first screen: the conversation below one status line, the message box at the window's bottom.
    assert_box_at_the_bottom(page)
    chat = box(page, "#chat-chatbot")
    assert chat["height"] >= 0.5 * size["height"], chat
    screenshot(page, "chat-layout-first-screen")
    # Some turns later, scrolled down the page to the conversation's top: the conversation and the box under it
    # are both in the window, the box never covering the conversation.
    for turn in range(3):
        page.fill(MESSAGE, f"Question number {turn}?")
        page.keyboard.press("Enter")
        page.wait_for_function("([s, n]) => document.querySelector('#chat-chatbot').innerText.split(s).length - 1 === n",
                               arg=[SCRIPT, turn + 1])
        expect(page.locator("#chat-send")).to_be_visible()
    page.locator("#chat-conversation").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_function("() => window.scrollY > 0")
    chat, message, dock = box(page, "#chat-chatbot"), box(page, MESSAGE), box(page, "#chat-dock")
    assert -2 <= chat["y"] and message["y"] + message["height"] <= size["height"], (chat, message)
    assert dock["y"] >= chat["y"] + chat["height"] - 1, (chat, dock)  # the dock never covers the conversation
    # The reply's small print (tokens, tokens/s) is in the dock, above the box: in view, never covered.
    stats = box(page, "#chat-stats")
    assert dock["y"] - 1 <= stats["y"] and stats["y"] + stats["height"] <= message["y"] + 1, (stats, message)
    expect(page.locator("#chat-stats")).to_contain_text("tokens/s")


@SIZES
def test_status_and_intro_share_one_line_in_plain_words(open_chat, app_url, size):
    page = open_chat(app_url + "?tab=chat", size)
    status = page.locator("#chat-status")
    line = status.locator("p").first.inner_text()
    assert "fast 8-bit mode" in line and "int8" not in line and "activations" not in line, line
    expect(status.locator("small")).to_contain_text("int8 weights")  # the technical words: the details line
    # The intro is folded beside the status ("About this chat"), so both take the height of one block.
    about = box(page, "#chat-about")
    top = box(page, "#chat-status")
    assert about["y"] < top["y"] + top["height"] and about["y"] + about["height"] > top["y"], (about, top)
    assert not page.locator("#chat-intro").is_visible()
    page.get_by_text("About this chat").click()
    expect(page.locator("#chat-intro")).to_contain_text("Dolly 2.0")
    # The chat's placeholder is in one font: no bold or italic run inside it.
    assert page.locator("#chat-chatbot .placeholder strong, #chat-chatbot .placeholder em").count() == 0


def test_phone_message_box_is_on_the_first_screen_after_try_in_chat(open_chat, app_url):
    # The longest record first: its reference card, under the answer on a phone, is what pushed the box down.
    page = open_chat(app_url + "?tab=explorer&sort=" + quote("response length, longest first"), PHONE)
    page.locator("#explorer-table tr[data-row]").first.click()
    button = page.locator("#explorer-try-in-chat:visible, .dolly-detail [data-action=try]:visible").first
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#chat-reference-box")).to_be_visible()
    expect(page.locator("#chat-send")).to_be_visible()  # the record's question was answered
    assert_box_at_the_bottom(page)
    screenshot(page, "chat-layout-phone-try-in-chat")


@SIZES
def test_generation_settings_are_labelled_rows_that_scroll_into_view(open_chat, app_url, size):
    page = open_chat(app_url + "?tab=chat", size)
    page.get_by_text("Generation settings").first.click()
    panel = page.locator("#chat-settings")
    expect(panel.get_by_label("Seed (-1 = random)")).to_be_visible()
    # Each slider: its label and its number box on one line, never overlapping, the label on one line,
    # and a 4-digit number fits its box.
    heads = panel.locator("input[type=range]").evaluate_all("""ranges => ranges.map(range => {
        const block = range.closest('.block'), name = block.querySelector('[data-testid=block-info]');
        const number = block.querySelector('input[type=number]');
        const [l, n] = [name.getBoundingClientRect(), number.getBoundingClientRect()];
        return {name: name.textContent, labelRight: l.right, labelHeight: l.height, numberLeft: n.left,
                lineHeight: parseFloat(getComputedStyle(name).lineHeight) || 24}; })""")
    assert [h["name"] for h in heads] == ["Temperature", "Top-p", "Top-k (0 = off)", "Max new tokens",
                                          "Repetition penalty"], heads
    for head in heads:
        assert head["labelRight"] <= head["numberLeft"] + 1, head  # the label never runs into its box
        assert head["labelHeight"] < 1.5 * head["lineHeight"], head  # one line
    number = panel.get_by_label("number input for Max new tokens")
    number.fill("1024")
    assert number.evaluate("e => e.scrollWidth <= e.clientWidth"), "1024 is cut in its box"
    # Opening it brought it into the window (it opens below the message box).
    page.wait_for_function("""() => { const r = document.getElementById('chat-settings').getBoundingClientRect();
                                      return r.top >= 0 && r.top < window.innerHeight - 200; }""")
    screenshot(page, "chat-layout-settings")


def test_the_keyboard_hint_shows_only_where_there_is_a_keyboard(browser, app_url):
    desktop = browser.new_context(viewport=WIDE)
    phone = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    try:
        for context, shown in ((desktop, True), (phone, False)):
            page = context.new_page()
            page.goto(app_url + "?tab=chat")
            expect(page.locator("#chat-status")).to_contain_text("is ready")
            # Never in the placeholder (a phone has no Shift+Enter); with a keyboard, a line of its own.
            assert "Shift+Enter" not in (page.locator(MESSAGE).get_attribute("placeholder") or "")
            hint = page.get_by_text("Enter sends · Shift+Enter starts a new line")
            (expect(hint).to_be_visible if shown else expect(hint).to_be_hidden)()
    finally:
        desktop.close()
        phone.close()
