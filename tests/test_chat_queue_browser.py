"""Waiting is visible (issue 15 §3): with every --concurrency slot busy, a reply waiting in the queue
says so in words (its place, and Gradio's estimate once a reply has been timed), and the line follows
the queue as it moves. A real browser, three users (pages) on one app with one slot; each step waits for
a state, never for time."""
import pytest
from playwright.sync_api import expect

from tests.browser import page_opener, screenshot
from tests.conftest import serve
from tests.test_chat_browser import set_max_new_tokens
from tests.tiny_model import save_scripted_model

TALK = "The capital of The capital of"


@pytest.fixture(scope="module")
def one_slot_url(tmp_path_factory, dolly_jsonl):
    # torch: a looping reply of 1,024 tokens must outlast the test's steps while others queue behind it. A
    # 256-wide, 6-layer model wrote it in ~14 s on a quiet 2-core machine, sometimes before those steps were
    # done (CI without load); this one takes several times longer, and each reply is stopped once seen.
    model = save_scripted_model(tmp_path_factory.mktemp("looping"), " The capital of", loop=True,
                                hidden_size=512, num_layers=12, num_heads=8, max_positions=4096)
    demo = serve("--model", model, "--data", dolly_jsonl, "--concurrency", "1", "--cpu-engine", "torch")
    yield demo.local_url
    demo.close()


def ready(page):
    expect(page.locator("#chat-status")).to_contain_text("is ready")


def ask(page, text, long=True):
    if long:
        page.get_by_text("Generation settings").first.click()
        set_max_new_tokens(page, "1024")
    page.locator("#chat-message textarea").fill(text)
    page.locator("#chat-message textarea").press("Enter")


def stop(page):
    """Stop the page's reply if it is still being written (a long wait elsewhere may have let it end)."""
    page.evaluate("document.querySelector('#chat-stop')?.click()")


def test_a_queued_reply_shows_its_place_and_follows_the_queue(browser, one_slot_url):
    with page_opener(browser, ready) as open_:
        first, second, third = (open_(one_slot_url) for _ in range(3))
        second.get_by_text("Generation settings").first.click()
        set_max_new_tokens(second, "1024")  # set before the first is asked, to keep the wait short
        ask(first, "Talk forever, first.")
        first.wait_for_function(f"() => document.querySelector('#chat-chatbot').innerText.includes('{TALK}')")
        assert first.locator("#chat-queue").count() == 0  # a reply being written is not queued
        ask(second, "Talk forever, second.", long=False)
        expect(second.locator("#chat-queue")).to_contain_text("Yours is next: every reply slot is busy")
        ask(third, "Talk forever, third.", long=False)
        expect(third.locator("#chat-queue")).to_contain_text("1 reply ahead of yours")
        expect(third.locator("#chat-queue")).to_have_attribute("role", "status")
        screenshot(third, "chat-15-3-queued")
        # Gradio's own terse line is not what people read.
        expect(third.get_by_text("queue: 2/2")).to_be_hidden()
        stop(first)
        second.wait_for_function(f"() => document.querySelector('#chat-chatbot').innerText.includes('{TALK}')")
        expect(second.locator("#chat-queue")).to_have_count(0)
        expect(third.locator("#chat-queue")).to_contain_text("Yours is next")  # it moved up
        stop(second)
        third.wait_for_function(f"() => document.querySelector('#chat-chatbot').innerText.includes('{TALK}')")
        expect(third.locator("#chat-queue")).to_have_count(0)
        stop(third)
        expect(third.locator("#chat-send")).to_be_visible()
