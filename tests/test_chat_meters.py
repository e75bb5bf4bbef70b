"""What the Chat tab measures (space/chat_meters.py): a reply's tokens and speed, and the next prompt's
share of the window, counted by the very function that builds the prompt (space/chat.py's build_prompt)."""
import pytest

from space.chat import build_prompt, prompt_budget
from space.chat_meters import prompt_meter, reply_stats
from space.transcript_export import passage_message
from tests.tiny_model import save_scripted_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(save_scripted_model(tmp_path_factory.mktemp("scripted"), " The river is"))


def test_reply_stats_in_words():
    assert reply_stats(42, 4.1, 0.5) == "42 tokens · 10.0 tokens/s · 4.1 s · first words after 0.5 s"
    assert reply_stats(1, 0.0) == "1 token · 0.0 s"
    assert reply_stats(None, 2.25) == "2.2 s"  # a backend that does not count
    assert reply_stats(1_500, 100.0) == "1,500 tokens · 15.0 tokens/s · 100.0 s"


def test_the_meter_counts_what_sending_would_build(tokenizer):
    history = [{"role": "user", "content": "Earlier question?"}, passage_message("ignored by the prompt"),
               {"role": "assistant", "content": "Earlier answer."}]
    from space.tab import conversation

    line, warns = prompt_meter(tokenizer, 512, "How long is the bridge?", "The bridge is 214 m long.",
                               conversation(history), 64)
    expected = build_prompt(tokenizer, "How long is the bridge?", "The bridge is 214 m long.", conversation(history),
                            window=512, max_new_tokens=64)
    assert not warns
    assert line == (f"Prompt: {len(expected.input_ids)} of {prompt_budget(512, 64)} tokens "
                    "(512-token window, 64 kept for the reply)")
    # An empty box counts as one word typed; max new tokens past half the window is lowered as sending does.
    line, _ = prompt_meter(tokenizer, 512, "", "", [], 400)
    assert "256 kept for the reply" in line and line.startswith(f"Prompt: {len(build_prompt(tokenizer, '…').input_ids)} of")


def test_the_meter_warns_before_sending_what_would_be_left_out(tokenizer):
    line, warns = prompt_meter(tokenizer, 512, "Summarize.", "word " * 2_000, [], 64)
    assert warns and "If sent now: The Context was too long" in line and "would be left out" in line
    history = [{"role": "user", "content": f"question {n} " + "x " * 40} for n in range(30)]
    line, warns = prompt_meter(tokenizer, 512, "And now?", "", history, 64)
    assert warns and "oldest turns would be left out" in line
    line, warns = prompt_meter(tokenizer, 512, "word " * 2_000, "", [], 64)
    assert warns and line.startswith("⚠️ Sending this would fail: The message is too long")
    line, warns = prompt_meter(tokenizer, 512, "hi", "", [], -3)
    assert warns and "max_new_tokens must be at least 1" in line
    # Nearly full: over 90% of the budget, nothing left out yet.
    budget = prompt_budget(512, 64)
    context = ""
    while len(build_prompt(tokenizer, "hi", context, window=512, max_new_tokens=64).input_ids) <= 0.92 * budget:
        context += "word "
    line, warns = prompt_meter(tokenizer, 512, "hi", context, [], 64)
    assert warns and "nearly full" in line and "If sent now" not in line
