"""Exporting a chat (space/transcript_export.py): Markdown to read, JSON in the OpenAI messages shape
that this app's /v1 takes back (sent here with the official openai client)."""
import json

from space.tab import COULD_NOT_ANSWER, STOPPED, notice
from space.transcript_export import file_name, openai_messages, passage_message, to_json, to_markdown

HISTORY = [
    {"role": "user", "content": "When did the bridge open?"},
    passage_message("The Millbrook Bridge opened in 1891."),
    {"role": "assistant", "content": "In 1891."},
    {"role": "user", "content": [{"type": "text", "text": "How long is it?"}]},  # Gradio 6's blocks
    passage_message("The Millbrook Bridge opened in 1891."),  # the same passage: not repeated
    {"role": "assistant", "content": "214 metres."},
    notice(STOPPED, "You stopped this reply."),
    {"role": "user", "content": "And the river?"},
    passage_message("The River Alder runs east."),  # a new passage
    {"role": "assistant", "content": "It runs east."},
    {"role": "user", "content": "Any poem?"},  # no passage
    notice(COULD_NOT_ANSWER, "Model folder not found."),
]


def test_json_is_openai_messages_with_the_passage_as_a_system_message():
    assert openai_messages(HISTORY) == [
        {"role": "system", "content": "The Millbrook Bridge opened in 1891."},
        {"role": "user", "content": "When did the bridge open?"},
        {"role": "assistant", "content": "In 1891."},
        {"role": "user", "content": "How long is it?"},
        {"role": "assistant", "content": "214 metres."},
        {"role": "system", "content": "The River Alder runs east."},
        {"role": "user", "content": "And the river?"},
        {"role": "assistant", "content": "It runs east."},
        {"role": "user", "content": "Any poem?"},
    ]
    assert json.loads(to_json(HISTORY)) == openai_messages(HISTORY)
    assert openai_messages([]) == []


def test_markdown_has_each_message_the_passage_under_its_question_and_the_notices():
    text = to_markdown(HISTORY, "Bridge questions")
    assert text.startswith("# Bridge questions\n")
    order = ["**You:**\n\nWhen did the bridge open?", "*Passage this question used:*\n\n> The Millbrook Bridge opened",
             "**Dolly:**\n\nIn 1891.", "How long is it?", "214 metres.", "*Stopped. You stopped this reply.*",
             "> The River Alder runs east.", "Any poem?", "*⚠️ Could not answer. Model folder not found.*"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert "**Stopped.**" not in text and "metadata" not in text


def test_file_names_are_safe():
    assert file_name("When did the bridge open?", "md") == "dolly-when-did-the-bridge-open.md"
    assert file_name("../../etc/passwd", "json") == "dolly-etc-passwd.json"
    assert file_name("", "md") == "dolly-chat.md"
    assert len(file_name("x" * 500, "json")) <= len("dolly-.json") + 60


def test_an_exported_chat_is_accepted_by_v1_as_it_is(tmp_path_factory, dolly_jsonl):
    """The JSON export posted as `messages` to this app's /v1/chat/completions with the openai client."""
    from tests.test_openai_api import client, start
    from tests.tiny_model import save_scripted_model

    model = save_scripted_model(tmp_path_factory.mktemp("scripted"), " The capital of the river is")
    demo, url = start(model, dolly_jsonl)  # waits until the model has loaded
    try:
        answer = client(url).chat.completions.create(model=model.name, messages=json.loads(to_json(HISTORY)),
                                                     max_tokens=16)
        assert "capital of the river" in answer.choices[0].message.content
    finally:
        demo.close()
