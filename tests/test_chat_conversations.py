"""The Chat tab's conversation list (space/conversations.py) and the history steps of space/tab.py that
it relies on: titles, order, the cap, rename and delete, a reload mid-reply, edit & resend. Plain
functions, no browser (tests/test_chat_history_browser.py drives the same through Chromium)."""
import json

import pytest

from space import conversations as chats
from space.tab import STOPPED, conversation, edited_history, last_user_turn, notice
from space.transcript_export import passage_message


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_title_is_the_first_message_on_one_line_cut_at_a_word():
    assert chats.title_of([]) == chats.NEW_TITLE
    assert chats.title_of([user("  What is\n a llama?  "), bot("An animal.")]) == "What is a llama?"
    # Gradio 6 sends content as a list of blocks.
    assert chats.title_of([{"role": "user", "content": [{"type": "text", "text": "Blocks too"}]}]) == "Blocks too"
    long = "Summarize the following passage about the history of the Millbrook Bridge, please, in detail"
    title = chats.title_of([user(long)])
    assert title.endswith("…") and len(title) <= chats.TITLE_CHARS + 1 and long.startswith(title[:-1])
    assert not title[:-1].endswith(" ")  # cut at a word, not mid-word
    assert title[:-1] == long[:len(title) - 1] and long[len(title) - 1] in " ,"


def test_a_chat_is_saved_once_it_has_a_message_and_the_list_is_newest_first():
    store = chats.empty_store()
    store, empty_id = chats.save(store, None, [], "ctx", {}, now=1)
    assert empty_id is None and store["conversations"] == []  # a new chat never used leaves nothing
    store, first = chats.save(store, None, [user("First?")], "ctx", {"seed": 7}, now=10)
    store, second = chats.save(store, None, [user("Second?")], "", {}, now=20)
    assert first != second and store["active"] == second
    assert [title for title, _ in chats.choices(store)] == ["Second?", "First?"]
    # Writing to the older one moves it to the top, keeps its id, settings and Context.
    store, again = chats.save(store, first, [user("First?"), bot("Yes.")], "ctx 2", {"seed": 8}, now=30)
    assert again == first and [cid for _, cid in chats.choices(store)] == [first, second]
    saved = chats.find(store, first)
    assert saved["context"] == "ctx 2" and saved["settings"] == {"seed": 8} and saved["created"] == 10


def test_rename_keeps_the_title_and_an_empty_title_is_refused():
    store, cid = chats.save(chats.empty_store(), None, [user("Original question")], now=1)
    store = chats.rename(store, cid, "  My   llama notes ")
    assert chats.find(store, cid)["title"] == "My llama notes"
    store, _ = chats.save(store, cid, [user("Original question"), bot("ok"), user("more")], now=2)
    assert chats.find(store, cid)["title"] == "My llama notes"  # a renamed chat keeps its name
    with pytest.raises(ValueError, match="cannot be empty"):
        chats.rename(store, cid, "   ")
    with pytest.raises(ValueError, match="send a message first"):
        chats.rename(store, None, "x")


def test_delete_shows_the_newest_left():
    store, a = chats.save(chats.empty_store(), None, [user("a")], now=1)
    store, b = chats.save(store, None, [user("b")], now=2)
    store, c = chats.save(store, None, [user("c")], now=3)
    store, following = chats.delete(store, c)
    assert following == b and [cid for _, cid in chats.choices(store)] == [b, a]
    store, following = chats.delete(store, b)
    store, following = chats.delete(store, a)
    assert following is None and store == chats.empty_store()


def test_the_cap_drops_the_chats_used_longest_ago_never_the_open_one(monkeypatch):
    store = chats.empty_store()
    ids = []
    for n in range(chats.MAX_CONVERSATIONS + 3):
        store, cid = chats.save(store, None, [user(f"question {n}")], now=n)
        ids.append(cid)
    assert len(store["conversations"]) == chats.MAX_CONVERSATIONS
    kept = {c["id"] for c in store["conversations"]}
    assert kept == set(ids[3:])  # the three oldest went
    # Size: a long chat pushes the oldest out, and the open one stays even alone over the budget.
    monkeypatch.setattr(chats, "MAX_STORE_CHARS", 20_000)
    store, big = chats.save(store, None, [user("big"), bot("x" * 15_000)], now=1_000)
    assert chats.store_chars(store) <= 20_000 and chats.find(store, big)
    store, huge = chats.save(store, None, [user("huge"), bot("y" * 30_000)], now=2_000)
    assert [c["id"] for c in store["conversations"]] == [huge]


def test_whatever_the_browser_holds_opens_as_a_list():
    for value in (None, "text", 7, [], {"conversations": "no"}, {"conversations": [1, {"id": ""}, {"no": "id"}]}):
        assert chats.clean_store(value) == chats.empty_store()
    store = chats.clean_store({"conversations": [{"id": "x", "history": [user("hi"), "junk", {"role": "tool"}]},
                                                 {"id": "x", "history": []}], "active": "missing"})
    assert [c["id"] for c in store["conversations"]] == ["x"] and store["active"] is None
    assert store["conversations"][0]["history"] == [user("hi")] and store["conversations"][0]["title"] == "hi"
    json.dumps(store)  # all of it is JSON for localStorage


def test_a_reply_cut_by_a_reload_comes_back_marked():
    store, cid = chats.save(chats.empty_store(), None, [user("Tell me")], "passage", {"seed": 3}, now=1)
    cut = notice(STOPPED, "reloaded")
    live = chats.live_record(cid, [user("Tell me"), passage_message("passage"), bot("Half a rep")],
                             "passage", {"seed": 3}, "")
    merged = chats.merge_live(store, json.loads(json.dumps(live)), cut)
    saved = chats.find(merged, cid)
    assert saved["history"][-2:] == [bot("Half a rep"), cut]
    assert saved["context"] == "passage" and saved["settings"] == {"seed": 3} and merged["active"] == cid
    # A live copy of a chat that was never in the list (its first save was lost) is added to it.
    other = chats.merge_live(chats.empty_store(), dict(live, id="new1"), cut)
    assert chats.find(other, "new1")["history"][-1] == cut
    for nothing in (None, {}, {"id": 5}, "x"):
        assert chats.merge_live(store, nothing, cut) == store


def test_edit_and_resend_keeps_the_conversation_before_the_edited_message():
    history = [user("one"), passage_message("ctx"), bot("1"), user("two"), bot("2"), user("three"), bot("3")]
    before, text = edited_history(history, 3, "two, edited")
    assert text == "two, edited" and before == history[:3] + [user("two, edited")]
    assert edited_history(history, 0, [{"type": "text", "text": "one!"}]) == ([user("one!")], "one!")
    for index, value in ((2, "x"), (1, "x"), (99, "x"), (-1, "x"), ((0, 1), "x"), (3, "   ")):
        assert edited_history(history, index, value) == (history, None)


def test_passages_and_notices_are_no_part_of_the_prompt():
    history = [user("q"), passage_message("the passage"), bot("a"), notice(STOPPED, "x")]
    assert conversation(history) == [user("q"), bot("a")]
    assert last_user_turn(history) == ([], "q")


def test_a_save_writes_the_title_box_only_when_the_title_changed():
    """The save after a reply must not put the old title back into a box someone is renaming in."""
    import gradio as gr

    from space.tab import _save

    settings = [None] * 7
    out = _save(chats.empty_store(), None, [user("First?")], "", "", *settings)
    store, cid, title = out[0], out[1], out[-1]
    assert title == "First?"
    out = _save(store, cid, [user("First?"), bot("ok")], "", "", *settings)
    assert out[-1] == gr.skip()
    out = _save(out[0], cid, [user("First, edited?")], "", "", *settings)  # an edited first message
    assert out[-1] == "First, edited?"


def test_opening_the_page_with_nothing_to_restore_leaves_what_was_typed():
    """The page-load answer can land after someone typed a Context (a busy server): with no conversation to
    show it must not write the boxes (it wiped the Context, and the first send saved the chat without it)."""
    import gradio as gr

    from space.tab import _on_load, _save

    out = _on_load(chats.empty_store(), None)
    store, live, current, shown, (radio, accordion, title) = out[0], out[1], out[2], out[3:-3], out[-3:]
    assert current is None and live == chats.NO_LIVE and radio.choices == [] and accordion.label == "Your chats (0)"
    assert shown and all(value == gr.skip() for value in shown) and title == gr.skip()
    # With a conversation that was open, the page shows it again: its history and Context.
    saved = _save(store, None, [user("Llamas?"), bot("Yes.")], "Llamas live in the Andes.", "", *[None] * 7)
    out = _on_load(saved[0], None)
    assert out[2] == saved[1] and out[3] == [user("Llamas?"), bot("Yes.")] and out[4] == "Llamas live in the Andes."
    assert out[-1] == "Llamas?"
