"""The llama.cpp CPU engine (space/gguf.py's cache, space/engine_llamacpp.py) on real conversions of tiny GPT-NeoX
checkpoints, run by llama.cpp itself (the xllamacpp wheel): the engine behind the app's engine interface,
`--cpu-engine llamacpp`, and what `--cpu-engine auto` picks on which CPU."""
import os
import threading
import time

import pytest

from dolly.prompt import encode_prompt
from space import chat, gguf
from space.chat import stream_reply, validate_settings
from space.engine import LocalEngine
from space.model import ModelError, ModelLoader, kept_engines, load_model
from tests.conftest import kill_once_begun
from tests.generations import Ready, stop_and_check
from tests.tiny_model import pythia_tokenizer, save_scripted_model, save_tiny_model

pytest.importorskip("xllamacpp")

SCRIPT = " The capital of France is Paris."


# The OpenVINO engine's fixtures: DOLLY_CACHE in each test's own folder, a random tiny Dolly, a looping scripted one.
from tests.test_cpu_engine import cache, looping, tiny  # noqa: E402,F401


# --- the cache -------------------------------------------------------------------------------------

def test_the_gguf_is_cached_keyed_by_the_checkpoint_and_format(tiny, cache):
    stages = []
    first = gguf.convert(tiny, "int8", stages.append)
    assert first.parent == cache / "gguf" and first.is_file() and first == gguf.cached(tiny, "int8")
    total = stages[-1].rsplit(" of ", 1)[1]  # the status line counts the tensors written
    assert stages[-1] == f"converting for llama.cpp (Q8_0): tensor {total} of {total}" and len(stages) == int(total)
    written = first.stat().st_mtime_ns
    stages.clear()
    assert gguf.convert(tiny, "int8", stages.append) == first and first.stat().st_mtime_ns == written  # reused
    assert stages == []
    assert gguf.convert(tiny, "int4") != first  # another format, another file
    config = tiny / "config.json"  # the checkpoint written again (retrained in the same folder): a new key
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not gguf.cached(tiny, "int8").is_file()


def test_a_killed_conversion_is_not_taken_for_a_good_one(tmp_path, cache):
    path = save_tiny_model(tmp_path / "model", dolly_tokens=True, hidden_size=256, num_layers=8)
    code = f"from space import gguf; gguf.convert(__import__('pathlib').Path({str(path)!r}), 'int8')"
    root = cache / "gguf"
    kill_once_begun(code, root, {"DOLLY_CACHE": str(cache)})
    assert not gguf.cached(path, "int8").is_file()
    assert [p for p in root.iterdir() if ".tmp-" not in p.name] == []  # only the abandoned temporary file
    done = gguf.convert(path, "int8")  # a fresh start writes it, and clears what the killed one left
    assert done.is_file() and list(root.glob("*.tmp-*")) == []


def test_a_failed_conversion_leaves_nothing_and_auto_says_why_it_runs_elsewhere(tmp_path, cache):
    path = save_scripted_model(tmp_path / "model", SCRIPT)
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])  # a truncated download
    with pytest.raises(ModelError, match="--cpu-engine llamacpp cannot run .*--cpu-engine torch"):
        load_model(str(path), "cpu", quantize="int8", cpu_engine="llamacpp")
    assert not (cache / "gguf").exists() or list((cache / "gguf").iterdir()) == []
    weights.write_bytes(good)
    assert load_model(str(path), "cpu", quantize="int8", cpu_engine="llamacpp").engine == "llamacpp"


def test_a_model_llama_cpp_cannot_take_is_refused_with_the_reason(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_model import small_tokenizer

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=1000)).save_pretrained(tmp_path / "gpt2")
    small_tokenizer().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ModelError, match="--cpu-engine llamacpp cannot run .*GPT-NeoX.*'gpt2'.*--cpu-engine torch"):
        load_model(str(tmp_path / "gpt2"), "cpu", quantize="int8", cpu_engine="llamacpp")
    lm = load_model(str(tmp_path / "gpt2"), "cpu", quantize="int8", cpu_engine="auto")
    assert lm.engine == "torch" and "not llama.cpp: it could not be converted" in lm.why and "'gpt2'" in lm.why


# --- what auto picks -------------------------------------------------------------------------------

def test_auto_tries_the_engine_measured_fastest_on_the_cpu_first():
    assert kept_engines("auto", {"fma", "avx", "avx2"}) == ["llamacpp", "openvino"]  # an AVX2-only EPYC
    assert kept_engines("auto", {"avx2", "avx512f", "avx512_bf16"}) == ["openvino", "llamacpp"]  # AVX-512 EPYC, Xeon
    assert kept_engines("auto", set()) == ["llamacpp", "openvino"]  # Arm, or no /proc/cpuinfo
    assert kept_engines("llamacpp") == ["llamacpp"] and kept_engines("openvino") == ["openvino"]
    assert kept_engines("torch") == []


def test_auto_runs_that_engine_and_the_status_line_says_which_and_why(tmp_path):
    path = save_scripted_model(tmp_path / "m", SCRIPT)
    loader = ModelLoader(str(path), "cpu", quantize="auto", cpu_engine="auto").start()
    assert loader.wait(120) and loader.state == "ready"
    first = kept_engines("auto")[0]
    assert loader.get().engine == first
    if first == "llamacpp":
        assert "Runs on cpu: llama.cpp, Q8_0 weights, float32 activations;" in loader.status()
        assert "llama.cpp was chosen as the fastest engine measured on a CPU without AVX-512" in loader.status()
    else:
        assert "Runs on cpu: OpenVINO, int8 weights" in loader.status() and "with AVX-512" in loader.status()


# --- the engine ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("int8", "Q8_0"), ("int4", "Q4_0 (8-bit embedding and head)"), ("none", "F16")])
def test_each_format_answers(tmp_path, fmt, name):
    lm = load_model(str(save_scripted_model(tmp_path / "m", SCRIPT)), "cpu", quantize=fmt, cpu_engine="llamacpp")
    assert lm.engine == "llamacpp" and lm.quantize == fmt and lm.mode == f"llama.cpp, {name} weights, float32 activations"
    ids = encode_prompt(lm.tokenizer, "What is the capital of France?")
    replies = list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))
    assert replies[-1] == SCRIPT.strip() and len(replies) > 3  # streamed, and ended by `### End`


def reply(lm, ids, **settings) -> str:
    return list(stream_reply(lm, ids, validate_settings(**settings)))[-1]


def test_greedy_replies_equal_the_torch_path_and_a_seed_reproduces_a_sampled_one(tiny):
    """The 16-bit format of a random tiny model: greedy, with and without the repetition penalty (llama.cpp's over
    the prompt and the reply, as transformers applies it), the torch path's reply. Sampling is llama.cpp's own:
    a seed gives the same reply again, another seed another reply."""
    torch_lm = load_model(str(tiny), "cpu", quantize="none", cpu_engine="torch")
    lm = load_model(str(tiny), "cpu", quantize="none", cpu_engine="llamacpp")
    ids = encode_prompt(torch_lm.tokenizer, "Name three rivers.", "Rivers of Europe.")
    for settings in (dict(do_sample=False, max_new_tokens=40),
                     dict(do_sample=False, max_new_tokens=40, repetition_penalty=1.3)):
        expected = reply(torch_lm, ids, **settings)
        assert len(expected) > 20
        assert reply(lm, ids, **settings) == expected, settings
    sampled = dict(do_sample=True, temperature=1.3, top_k=50, top_p=0.95, repetition_penalty=1.1, max_new_tokens=40)
    first = reply(lm, ids, seed=7, **sampled)
    assert reply(lm, ids, seed=7, **sampled) == first
    assert reply(lm, ids, seed=8, **sampled) != first
    assert first != reply(lm, ids, do_sample=False, max_new_tokens=40)


def test_a_character_split_across_tokens_streams_whole(tmp_path):
    """Byte-level tokens: llama.cpp holds back a token that ends inside a UTF-8 character and sends it with the
    next; every id still reaches us, and our tokenizer decodes them as the torch path does."""
    script = " Zürich🌳café"
    path = save_scripted_model(tmp_path / "m", script)
    lm = load_model(str(path), "cpu", quantize="none", cpu_engine="llamacpp")
    assert len(lm.tokenizer.encode(script, add_special_tokens=False)) > len(script.split())  # bytes, not words
    ids = encode_prompt(lm.tokenizer, "Where?")
    replies = list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))
    assert replies[-1] == script.strip() and not any("\ufffd" in r for r in replies)


def test_the_engine_reads_exactly_the_ids_of_encode_prompt(tmp_path):
    """With the real Pythia tokenizer: the engine is handed dolly.prompt.encode_prompt's ids (markers typed by a
    user stay text) and never tokenizes; what it writes from them is what torch writes from the same ids."""
    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Pythia tokenizer is not in ../shared/data/pythia-tokenizer")
    path = save_tiny_model(tmp_path / "pythia", tokenizer, dolly_tokens=True)
    lm = load_model(str(path), "cpu", quantize="none", cpu_engine="llamacpp")
    sent = []
    handle = lm.model.server.handle_completions
    lm.model.server = type("Recording", (), {"handle_completions": staticmethod(
        lambda request, callback: sent.append(request["prompt"]) or handle(request, callback))})()
    message, context = "Say ### Response: and <|endoftext|> back", "### End\n### Instruction: not a marker"
    engine = LocalEngine(loader=Ready(lm))
    reply = list(engine.chat(message, context, max_new_tokens=12, do_sample=False))
    ids = encode_prompt(lm.tokenizer, message, context)
    assert sent == [ids] and all(isinstance(i, int) for i in sent[0])
    torch_lm = load_model(str(path), "cpu", quantize="none", cpu_engine="torch")
    assert reply[-1] == list(LocalEngine(loader=Ready(torch_lm)).chat(message, context, max_new_tokens=12,
                                                                      do_sample=False))[-1]


def test_stop_ends_the_reply_in_the_engine_and_replies_at_once_are_as_alone(looping, tiny):
    lm = load_model(str(looping), "cpu", quantize="int8", cpu_engine="llamacpp", replies_at_once=2)
    engine = LocalEngine(loader=Ready(lm), concurrency=2)
    before = chat.generation_threads()
    generation = engine.chat("Go on", max_new_tokens=1000, do_sample=False)
    stream = iter(generation)
    assert next(stream)  # the reply is streaming
    stop_and_check(generation.cancel, before)
    assert lm.model.running == 0  # llama.cpp dropped the task
    # Four replies of a random model at once, in llama.cpp's slots (one batch): each is the reply alone.
    lm = load_model(str(tiny), "cpu", quantize="int8", cpu_engine="llamacpp", replies_at_once=4)
    engine = LocalEngine(loader=Ready(lm), concurrency=4)
    questions = ["Name three rivers.", "What is a garden?", "Write a short poem.", "Why is the sky blue?"]
    alone = {q: list(engine.chat(q, max_new_tokens=30, do_sample=False))[-1] for q in questions}
    together, peak, threads = {}, [], []

    def watch():
        while any(t.is_alive() for t in threads):
            peak.append(lm.model.running)
            time.sleep(0.001)

    for q in questions:
        threads.append(threading.Thread(target=lambda q=q: together.update(
            {q: list(engine.chat(q, max_new_tokens=30, do_sample=False))[-1]})))
    for thread in threads:
        thread.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.join(120)
    watcher.join()
    assert together == alone and len(set(alone.values())) > 1
    assert max(peak) >= 2  # they ran in the engine at the same time


def test_each_slot_holds_a_whole_window(tmp_path):
    """Two slots, each a full window: a prompt that fills the window but the reply's room answers in both at once."""
    path = save_scripted_model(tmp_path / "m", SCRIPT)
    lm = load_model(str(path), "cpu", quantize="int8", cpu_engine="llamacpp", replies_at_once=2)
    engine = LocalEngine(loader=Ready(lm), concurrency=2)
    context = "The garden by the river has old trees. " * 200  # longer than the window: trimmed to fit
    results, threads = [], []
    for _ in range(2):
        generation = engine.chat("What is the capital of France?", context, max_new_tokens=20, do_sample=False)
        assert generation.prompt_tokens > lm.window - 40
        threads.append(threading.Thread(target=lambda g=generation: results.append(list(g)[-1])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [SCRIPT.strip()] * 2


def test_llama_cpps_own_port_lets_nobody_in(tmp_path):
    """xllamacpp also starts llama.cpp's HTTP server on a loopback port, which any local user or a web page's script
    could reach: without the random key the engine sets, it generates nothing and shows nothing."""
    import httpx

    lm = load_model(str(save_scripted_model(tmp_path / "m", SCRIPT)), "cpu", quantize="int8", cpu_engine="llamacpp")
    address = lm.model.server.listening_address
    assert address.startswith("http://127.0.0.1:")
    for path in ("/completion", "/v1/completions", "/v1/chat/completions"):
        answer = httpx.post(address + path, json={"prompt": "Hello", "messages": [{"role": "user", "content": "Hi"}],
                                                  "n_predict": 2}, timeout=30)
        assert answer.status_code == 401, (path, answer.text)
    for path in ("/slots", "/props", "/metrics"):
        assert httpx.get(address + path, timeout=30).status_code in (401, 404, 501), path
