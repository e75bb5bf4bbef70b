"""The chat logic without a browser: prompts, trimming, settings, streaming and stopping, loading."""
import time

import pytest

from space import chat
from space.chat import (EMPTY_REPLY, HISTORY_HEADER, ChatInputError, active_generations, build_prompt, reply,
                        stream_reply, validate_settings, visible_reply)
from space.model import ModelError, ModelLoader, load_model, pick_device, pick_dtype
from tests.tiny_model import pythia_tokenizer, save_scripted_model, save_tiny_model, small_tokenizer
from dolly.prompt import END_KEY, INPUT_KEY, INSTRUCTION_KEY, RESPONSE_KEY, extract_response, format_prompt

SCRIPT = " The capital of the river is"


@pytest.fixture(scope="module")
def tokenizer(scripted_dir):
    return load_model(scripted_dir).tokenizer


@pytest.fixture(scope="module")
def scripted_dir(tmp_path_factory):
    """Writes SCRIPT, then `### End`."""
    return save_scripted_model(tmp_path_factory.mktemp("scripted"), SCRIPT)


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory):
    """Repeats its script and never writes `### End`; big enough that 1,000 tokens take a while."""
    return save_scripted_model(tmp_path_factory.mktemp("looping"), " The capital of", loop=True,
                               hidden_size=256, num_layers=6, num_heads=8, max_positions=4096)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):  # Gradio 6 hands history over with content as a list of blocks
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


# --- prompts -----------------------------------------------------------------------------------------

def test_prompt_without_context_is_dollys_prompt(tokenizer):
    prompt = build_prompt(tokenizer, "Name three rivers.")
    assert prompt.text == format_prompt("Name three rivers.")
    assert INPUT_KEY not in prompt.text and prompt.text.endswith(RESPONSE_KEY + "\n")
    assert prompt.input_ids == tokenizer.encode(prompt.text, add_special_tokens=False)
    assert prompt.notices == []


def test_prompt_with_context_uses_dollys_input_block(tokenizer):
    prompt = build_prompt(tokenizer, "How long is it?", "The bridge is 214 metres long.")
    assert prompt.text == format_prompt("How long is it?", "The bridge is 214 metres long.")
    assert f"{INPUT_KEY}\nThe bridge is 214 metres long." in prompt.text


def test_earlier_turns_are_folded_in_oldest_first(tokenizer):
    history = [user("first question"), assistant("first answer"), user("second question"), assistant("second answer")]
    prompt = build_prompt(tokenizer, "third question", "a passage", history)
    instruction = prompt.text.split(f"{INSTRUCTION_KEY}\n")[1].split("\n\n")[0]
    assert instruction == "third question"
    block = prompt.text.split(f"{INPUT_KEY}\n")[1]
    assert block.startswith("a passage\n\n" + HISTORY_HEADER)
    assert block.index("User: first question") < block.index("Assistant: first answer") < block.index("User: second question")
    assert prompt.notices == []


def test_oldest_turns_are_dropped_first_when_the_window_is_full(tokenizer):
    history = []
    for i in range(30):
        history += [user(f"question number {i} about rivers and bridges"), assistant(f"answer number {i} " + "word " * 10)]
    prompt = build_prompt(tokenizer, "last question", history=history, window=512, max_new_tokens=256)
    assert len(prompt.input_ids) <= 256
    assert "question number 29" in prompt.text  # the newest turn is kept ...
    assert "question number 0 " not in prompt.text  # ... the oldest is gone ...
    kept = [i for i in range(30) if f"question number {i} " in prompt.text]
    assert kept == list(range(kept[0], 30))  # ... and what is kept is the newest, unbroken
    assert len(prompt.notices) == 1 and f"{kept[0]} oldest turns were left out" in prompt.notices[0]


def test_trimming_tokenizes_each_turn_once_and_never_the_turns_far_out_of_reach(tokenizer, monkeypatch):
    """Trimming used to tokenize the prompt with every suffix of the conversation: quadratic, minutes of
    CPU for 4,000 turns. Each turn is now tokenized once, newest first, and only until the window is full;
    the prompt it picks is checked by tokenizing it whole (a turn kept is tokenized at most three times)."""
    import dolly.prompt

    encoded = []
    real = dolly.prompt._encode_plain

    def counting(tokenizer, text):  # the real tokenizer, each text it is given written down
        encoded.append(text)
        return real(tokenizer, text)

    monkeypatch.setattr(dolly.prompt, "_encode_plain", counting)
    turns = 300
    history = []
    for i in range(turns):
        history += [user(f"question number {i} about rivers"), assistant(f"answer number {i} " + "word " * 10)]
    prompt = build_prompt(tokenizer, "last question", history=history, window=2048, max_new_tokens=256)
    times = [sum(f"question number {i} about" in text for text in encoded) for i in range(turns)]
    assert max(times) <= 3, times
    kept = [i for i in range(turns) if f"question number {i} about" in prompt.text]
    assert kept == list(range(kept[0], turns)) and 0 < kept[0] < turns - 2
    assert times[:kept[0] - 1] == [0] * (kept[0] - 1)  # far older than what fits: never tokenized at all
    assert len(encoded) <= len(kept) + 12  # one per turn walked, a few for the whole prompts
    assert prompt.turns_dropped == kept[0] and f"the {kept[0]} oldest turns were left out" in prompt.notices[0]


def test_a_message_too_long_for_the_window_is_a_clear_error(tokenizer):
    with pytest.raises(ChatInputError, match="too long for this model.*Shorten the message"):
        build_prompt(tokenizer, "please " * 600, window=512, max_new_tokens=256)
    with pytest.raises(ChatInputError, match="limit is"):
        build_prompt(tokenizer, "x" * 60_000)
    with pytest.raises(ChatInputError, match="empty"):
        build_prompt(tokenizer, "   ")


def test_a_context_too_long_for_the_window_keeps_its_end_and_says_so(tokenizer):
    context = " ".join(f"sentence {i}." for i in range(400)) + " The answer is at the end."
    prompt = build_prompt(tokenizer, "Where is the answer?", context, window=512, max_new_tokens=256)
    assert len(prompt.input_ids) <= 256
    assert "The answer is at the end." in prompt.text and "sentence 0." not in prompt.text
    assert "Context was too long" in prompt.notices[0]


def test_real_pythia_tokenizer_markers_are_single_tokens():
    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("../shared/data/pythia-tokenizer is not on this machine")
    from dolly.prompt import add_special_tokens

    add_special_tokens(tokenizer)
    ids = chat.stop_token_ids(tokenizer)
    assert ids == [0, 50277, 50278, 50279]  # <|endoftext|>, ### End, ### Instruction:, ### Response:\n
    prompt = build_prompt(tokenizer, "Hi", "ctx")
    assert prompt.input_ids[-1] == 50279 and 50278 in prompt.input_ids


# --- what the user sees ------------------------------------------------------------------------------

def test_visible_reply_hides_markers_and_partial_markers():
    assert visible_reply(f"Paris is the capital.\n\n{END_KEY}") == ("Paris is the capital.", True)
    assert visible_reply(f"Paris.\n\n{INSTRUCTION_KEY}\nMore") == ("Paris.", True)
    assert visible_reply("Paris.\n\n##") == ("Paris.", False)  # might become ### End: held back
    assert visible_reply("Paris.\n\n### En") == ("Paris.", False)
    assert visible_reply("Use C# here #") == ("Use C# here", False)
    assert visible_reply("Use C# here #", final=True) == ("Use C# here #", False)
    assert visible_reply("caf\ufffd") == ("caf", False)


def test_response_extraction_matches_the_prompt_contract():
    text = format_prompt("Q?", "ctx") + f"An answer.\n\n{END_KEY}\nrubbish"
    assert extract_response(text) == "An answer."
    assert visible_reply(text.split(RESPONSE_KEY + "\n")[1])[0] == "An answer."


# --- settings ------------------------------------------------------------------------------------------

def test_defaults_are_the_seed_pipelines():
    settings = validate_settings()
    assert (settings.do_sample, settings.top_p, settings.top_k, settings.max_new_tokens) == (True, 0.92, 0, 256)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature must be 0 or more"),
    (dict(top_p=0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be 0 or more"),
    (dict(top_k=2.5), "top_k must be a whole number"),
    (dict(max_new_tokens=0), "max_new_tokens must be at least 1"),
    (dict(repetition_penalty=0), "repetition_penalty must be above 0"),
    (dict(temperature="hot"), "temperature must be a number"),
    (dict(temperature=float("nan")), "finite"),
    (dict(seed=-5), "seed must be -1"),
])
def test_invalid_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ChatInputError, match=message):
        validate_settings(**kwargs)


def test_max_new_tokens_is_capped_whatever_is_asked():
    settings = validate_settings(max_new_tokens=10**9)
    assert settings.max_new_tokens == chat.MAX_NEW_TOKENS_CAP
    assert "cap" in settings.notices[0]
    assert chat.fit_to_window(settings, 512).max_new_tokens == 256


# --- generating ----------------------------------------------------------------------------------------

def test_generation_stops_at_end_and_never_shows_it(scripted_dir):
    lm = load_model(scripted_dir)
    text, notices = reply(lm, "What is the capital?", context="Some passage.", max_new_tokens=100)
    assert text == SCRIPT.strip()
    assert END_KEY not in text and "###" not in text and notices == []
    greedy, _ = reply(lm, "What is the capital?", do_sample=False)
    assert greedy == SCRIPT.strip()


def test_streaming_yields_growing_text(scripted_dir):
    lm = load_model(scripted_dir)
    prompt = build_prompt(lm.tokenizer, "Hello")
    chunks = list(stream_reply(lm, prompt.input_ids, validate_settings()))
    assert len(chunks) >= 5
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1] == SCRIPT.strip()


def test_without_end_it_runs_to_max_new_tokens(looping_dir):
    lm = load_model(looping_dir)
    prompt = build_prompt(lm.tokenizer, "Hello")
    text = list(stream_reply(lm, prompt.input_ids, validate_settings(max_new_tokens=30)))[-1]
    assert len(lm.tokenizer.encode(" " + text)) == 30


def test_closing_the_stream_ends_the_generation_thread(looping_dir):
    lm = load_model(looping_dir)
    prompt = build_prompt(lm.tokenizer, "Hello")
    started = time.monotonic()
    full = list(stream_reply(lm, prompt.input_ids, validate_settings(max_new_tokens=60)))
    per_token = (time.monotonic() - started) / 60
    stream = stream_reply(lm, prompt.input_ids, validate_settings(max_new_tokens=1000))
    first = [next(stream) for _ in range(3)]
    assert active_generations() == 1
    stream.close()  # what Gradio does on Stop
    deadline = time.monotonic() + 10
    while active_generations() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert active_generations() == 0, "the generate() thread kept running after the stream was closed"
    assert time.monotonic() - started < (60 + 1000) * per_token / 2  # far sooner than 1,000 tokens
    assert full[-1].startswith(first[-1])


def test_a_seed_reproduces_a_sampled_reply(tmp_path):
    lm = load_model(save_tiny_model(tmp_path / "random", dolly_tokens=True))
    one = reply(lm, "Tell me a story.", seed=7, max_new_tokens=20)[0]
    two = reply(lm, "Tell me a story.", seed=7, max_new_tokens=20)[0]
    other = reply(lm, "Tell me a story.", seed=8, max_new_tokens=20)[0]
    assert one == two and one != other


def test_an_empty_reply_says_so(tmp_path):
    path = save_scripted_model(tmp_path / "silent", " The")
    lm = load_model(path)
    # a model that writes `### End` right after the marker: make the marker's successor End
    import torch
    from dolly.prompt import special_token_id

    with torch.no_grad():
        out = lm.model.get_output_embeddings().weight
        out[:, 0] = 0
        out[special_token_id(lm.tokenizer, END_KEY), 0] = 20.0
    assert reply(lm, "Hi")[0] == EMPTY_REPLY


# --- loading -------------------------------------------------------------------------------------------

def test_loading_errors_say_how_to_fix_them(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match=r"not found.*--model path/to/checkpoint"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 does
    with pytest.raises(ModelError, match=r"Hugging Face Hub.*--model "):
        load_model("databricks/dolly-v2-3b")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU. Use --device cpu"):
            pick_device("cuda")
    with pytest.raises(ModelError, match="Unknown dtype"):
        pick_dtype("float8", "cpu")


def test_loader_reports_progress_then_ready_or_the_fix(scripted_dir, tmp_path):
    loader = ModelLoader(str(scripted_dir))
    assert loader.state == "loading" and "waiting" in loader.status()
    loader.start()
    assert loader.wait(60)
    assert loader.state == "ready" and "is ready, full-precision mode (512-token window)" in loader.status()
    assert loader.get().window == 512
    broken = ModelLoader(str(tmp_path / "nowhere")).start()
    assert broken.wait(60) and broken.state == "failed"
    assert "--model path/to/checkpoint" in broken.status()
    with pytest.raises(ModelError, match="not found"):
        broken.get()



def test_status_line_keeps_polling_until_a_running_reply_ends(looping_dir):
    from space.engine import LocalEngine
    from space.tab import status_line as _status

    loader = ModelLoader(str(looping_dir)).start()
    assert loader.wait(60)
    engine = LocalEngine(loader)
    line, timer = _status(engine)
    assert "Generating" not in line and timer.active is False  # ready and idle: no need to poll
    lm = loader.get()
    stream = stream_reply(lm, build_prompt(lm.tokenizer, "Hello").input_ids, validate_settings(max_new_tokens=1000))
    next(stream)
    line, timer = _status(engine)
    # While a reply runs the timer stays on, so the "Generating" note is cleared once it ends.
    assert "Generating 1 reply now." in line and timer.active is True
    stream.close()
    deadline = time.monotonic() + 10
    while active_generations() and time.monotonic() < deadline:
        time.sleep(0.01)
    line, timer = _status(engine)
    assert "Generating" not in line and timer.active is False


def test_a_concurrency_slot_is_free_only_once_the_model_has_stopped(looping_dir):
    # A reply ended early (a stop string, Stop, a client gone) used to give its slot back while its
    # generate() thread still ran one more step: one generation over --concurrency (a flaky CI run).
    from space.engine import LocalEngine

    loader = ModelLoader(str(looping_dir)).start()
    assert loader.wait(60)
    engine = LocalEngine(loader, concurrency=1)
    for ending in ("stop string", "closed"):
        generation = engine.chat("Hello", stop=["capital"] if ending == "stop string" else (), max_new_tokens=1000)
        stream = iter(generation)
        if ending == "stop string":
            assert list(stream) == ["The"] and generation.finish_reason == "stop"
        else:
            next(stream)
            stream.close()
        assert engine.limiter._slots.acquire(timeout=30)  # given back once generate() is over...
        assert active_generations() == 0, f"generate() still ran after its slot was given back ({ending})"
        engine.limiter.release()


# --- settings as API callers send them (issue 7 §5) ---------------------------------------------------

@pytest.mark.parametrize("kwargs, expected", [
    (dict(seed="7"), ("seed", 7)),
    (dict(seed=" 12 "), ("seed", 12)),
    (dict(seed=2**63 - 1), ("seed", 2**63 - 1)),  # exact: a float would round it out of range
    (dict(seed="9007199254740993"), ("seed", 9007199254740993)),
    (dict(top_k="40"), ("top_k", 40)),
    (dict(top_k=40.0), ("top_k", 40)),
    (dict(temperature="0.7"), ("temperature", 0.7)),
    (dict(do_sample="false"), ("do_sample", False)),
    (dict(do_sample=0), ("do_sample", False)),
    (dict(do_sample="on"), ("do_sample", True)),
])
def test_exact_numbers_and_flags_sent_as_strings_are_accepted(kwargs, expected):
    name, value = expected
    got = getattr(validate_settings(**kwargs), name)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed="abc"), r"seed must be a whole number: -1 \(random\) or 0 to 2\*\*63-1; got 'abc'"),
    (dict(seed="7.5"), "seed must be a whole number"),
    (dict(seed=True), "seed must be a whole number"),
    (dict(do_sample="banana"), "do_sample must be true or false; got 'banana'"),
    (dict(do_sample=2), "do_sample must be true or false"),
    (dict(max_new_tokens="lots"), "max_new_tokens must be a whole number, 1 or more"),
    (dict(top_p=[0.5]), "top_p must be a number above 0 and at most 1"),
    (dict(repetition_penalty={}), r"repetition_penalty must be a number above 0 \(1 = none\)"),
])
def test_values_of_the_wrong_type_name_the_setting_and_what_it_accepts(kwargs, message):
    with pytest.raises(ChatInputError, match=message):
        validate_settings(**kwargs)


# --- the Chat tab's logic, without a browser ----------------------------------------------------------

def test_notices_are_shown_but_never_part_of_the_prompt(tokenizer):
    from space.tab import COULD_NOT_ANSWER, NOTE, STOPPED, conversation, notice

    history = [user("first question"), notice(NOTE, "The Context was trimmed."), assistant("first answer"),
               user("second question"), notice(STOPPED, "You stopped this reply."),
               notice(COULD_NOT_ANSWER, "The message is too long.")]
    kept = conversation(history)
    assert [m["role"] for m in kept] == ["user", "assistant", "user"]
    prompt = build_prompt(tokenizer, "third question", history=kept)
    assert "trimmed" not in prompt.text and "stopped" not in prompt.text and "too long" not in prompt.text
    assert "User: second question" in prompt.text  # the stopped turn is still part of the conversation


def test_stop_is_marked_once_and_undo_retry_find_the_last_message():
    from space.tab import STOPPED, last_user_turn, mark_stopped, notice_title

    history = [user("q1"), assistant("a1"), user("q2"), assistant("a2 cut sh")]
    marked = mark_stopped(history)
    assert notice_title(marked[-1]) == STOPPED and marked[:-1] == history
    assert mark_stopped(marked) == marked  # Stop's click and the end of the reply both mark it: once
    assert last_user_turn(marked) == (history[:2], "q2")
    assert last_user_turn([]) == ([], None)


def test_max_new_tokens_slider_is_bounded_by_the_window():
    from space.tab import max_new_tokens_limit

    assert max_new_tokens_limit(512) == 256
    assert max_new_tokens_limit(2048) == min(chat.MAX_NEW_TOKENS_CAP, 1024)
    assert max_new_tokens_limit(None) == chat.MAX_NEW_TOKENS_CAP  # not loaded yet: the server's cap
    # and a value the slider allows is never lowered with a notice
    settings = chat.fit_to_window(validate_settings(max_new_tokens=max_new_tokens_limit(512)), 512)
    assert settings.notices == ()


def test_the_status_tick_redraws_the_slider_only_when_its_bound_changes(looping_dir, scripted_dir):
    # Redrawing the slider wipes a number the user is typing into its box (a flaky browser test): when the
    # model's window allows the server's cap anyway, the tick that says "ready" leaves the slider alone.
    import gradio as gr

    from space.engine import LocalEngine
    from space.tab import _tick

    engines = {}
    for name, path in (("big", looping_dir), ("small", scripted_dir)):  # windows 4096 and 512
        loader = ModelLoader(str(path)).start()
        assert loader.wait(60)
        engines[name] = LocalEngine(loader)
    *_, seen, slider, _, _ = _tick(engines["big"], None, 256)
    assert seen == ("ready", chat.MAX_NEW_TOKENS_CAP) and slider == gr.skip()
    assert _tick(engines["big"], seen, 700)[3] == gr.skip()  # no change of state: nothing but the line
    *_, seen, slider, _, _ = _tick(engines["small"], None, 100)  # a smaller bound is sent, the value kept
    assert seen == ("ready", 256) and slider != gr.skip() and slider.maximum == 256 and "value" not in slider.constructor_args
    *_, seen, slider, _, _ = _tick(engines["small"], ("loading", chat.MAX_NEW_TOKENS_CAP), 900)  # over it: lowered
    assert slider.maximum == 256 and slider.value == 256


def test_the_status_line_names_the_model_and_keeps_the_path_for_the_details(scripted_dir):
    loader = ModelLoader(str(scripted_dir)).start()
    assert loader.wait(60)
    first, *details = loader.status().split("\n\n")
    assert scripted_dir.name in first and str(scripted_dir) not in first
    assert details and str(scripted_dir) in details[0]
    hub = ModelLoader("databricks/dolly-v2-3b")
    assert "databricks/dolly-v2-3b" in hub.status() and "Loaded from" not in hub.status()


def test_intro_links_the_model_and_dataset_cards():
    from space.tab import intro

    line = intro("databricks/dolly-v2-3b")
    assert "[databricks/dolly-v2-3b](https://huggingface.co/databricks/dolly-v2-3b)" in line
    assert "https://huggingface.co/datasets/databricks/databricks-dolly-15k" in line and "Dolly 2.0" in line
    assert "huggingface.co/my-dolly" not in intro("my-dolly")  # a local folder has no card to link


def test_a_failed_reply_is_a_notice_and_the_text_goes_back_in_the_box(tmp_path):
    """The chat box's reply function never raises: the reason is in the conversation, and the user's
    message is back in the box (the browser tests show the same on the page)."""
    from space.engine import LocalEngine
    from space.tab import COULD_NOT_ANSWER, make_respond_fn, notice_title

    loader = ModelLoader(str(tmp_path / "nowhere")).start()
    assert loader.wait(60)
    respond = make_respond_fn(LocalEngine(loader))
    history = [user("earlier"), assistant("answer"), user("Hello?")]
    # (message, history, Context, the conversation's id (None: not saved), reference, settings)
    outputs = list(respond("Hello?", history, "", None, "", *validate_settings().__dict__.values()))
    shown, box = outputs[-1][:2]
    assert shown[:2] == history[:2] and notice_title(shown[-1]) == COULD_NOT_ANSWER
    assert "Model folder not found" in shown[-1]["content"]
    assert box == "Hello?"


def test_two_models_loading_at_once_leave_the_default_dtype_alone(tmp_path):
    # from_pretrained(dtype=bf16) swaps torch's process-wide default dtype while it builds a model; two
    # loads interleaved could leave it bf16 for the rest of the process (seen as a flaky CI run).
    import threading

    import torch

    paths = [save_tiny_model(tmp_path / f"m{i}", small_tokenizer(), dolly_tokens=True) for i in range(2)]
    for _ in range(20):
        threads = [threading.Thread(target=load_model, args=(str(p), "cpu", "bfloat16")) for p in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert torch.get_default_dtype() == torch.float32
