"""The OpenVINO CPU engine (space/convert.py, space/engine_openvino.py) on real conversions of tiny
GPT-NeoX checkpoints: the cache, the engine behind the app's engine interface, and --cpu-engine."""
import os
import subprocess
import sys
import threading
import time

import openai
import pytest

import app
from dolly.prompt import encode_prompt, format_prompt
from space import chat
from space.chat import stream_reply, validate_settings
from space.convert import ConversionError, cache_root, convert, converted
from space.engine import LocalEngine
from space.model import ModelError, ModelLoader, load_model
from tests.conftest import ROOT, chat_once_loaded, kill_once_begun, serve
from tests.generations import Ready, reply_ids, stop_and_check
from tests.tiny_model import pythia_tokenizer, save_scripted_model, save_tiny_model

SCRIPT = " The capital of France is Paris."


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOLLY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), dolly_tokens=True)


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    return save_scripted_model(tmp_path_factory.mktemp("looping"), " The capital of", loop=True)


# --- the cache -------------------------------------------------------------------------------------

def test_conversion_is_cached_keyed_by_the_checkpoint_and_format(tiny, cache):
    stages = []
    first = convert(tiny, "int8", on_stage=stages.append)
    assert any("tracing" in s for s in stages) and any("int8" in s for s in stages)
    assert first.parent == cache / "openvino" and (first / "model.xml").is_file()
    written = (first / "model.xml").stat().st_mtime_ns
    stages.clear()
    assert convert(tiny, "int8", on_stage=stages.append) == first  # a second start reuses it
    assert stages == [] and (first / "model.xml").stat().st_mtime_ns == written
    other = convert(tiny, "none")  # another format, another entry
    assert other != first and converted(tiny, "none") == other
    # The checkpoint written again (a retrained model in the same folder) is a new key.
    config = tiny / "config.json"
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert converted(tiny, "int8") is None
    assert convert(tiny, "int8") != first


def test_a_failed_conversion_leaves_nothing_and_the_next_start_converts(tmp_path, cache):
    path = save_tiny_model(tmp_path / "model", dolly_tokens=True)
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])  # a truncated download
    with pytest.raises(ConversionError, match="cannot load the weights"):
        convert(path, "int8")
    assert converted(path, "int8") is None
    assert list(cache_root().iterdir()) == []  # no temporary folder left either
    weights.write_bytes(good)
    assert (convert(path, "int8") / "model.xml").is_file()


def test_a_killed_conversion_is_not_taken_for_a_good_one(tmp_path, cache):
    path = save_tiny_model(tmp_path / "model", dolly_tokens=True, hidden_size=128, num_layers=4)
    code = f"from space.convert import convert; convert(__import__('pathlib').Path({str(path)!r}), 'int4')"
    root = cache / "openvino"
    kill_once_begun(code, root, {"DOLLY_CACHE": str(cache)})
    assert converted(path, "int4") is None
    assert not [p for p in root.iterdir() if ".tmp-" not in p.name]  # only the abandoned temporary folder
    done = convert(path, "int4")  # a fresh start converts again, and clears what the killed one left
    assert (done / "model.xml").is_file() and list(root.glob("*.tmp-*")) == []


def test_a_model_openvino_cannot_take_is_refused_with_the_reason(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_model import small_tokenizer

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=1000)).save_pretrained(tmp_path / "gpt2")
    small_tokenizer().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConversionError, match="converts GPT-NeoX"):
        convert(tmp_path / "gpt2", "int8")
    # --cpu-engine openvino says so and how to go on; auto runs the torch path and the status line says why
    # (llama.cpp, which auto tries too, cannot take it either: tests/test_cpu_engine_llamacpp.py).
    with pytest.raises(ModelError, match="--cpu-engine openvino cannot run .*GPT-NeoX.*--cpu-engine torch"):
        load_model(str(tmp_path / "gpt2"), "cpu", quantize="int8", cpu_engine="openvino")
    loader = ModelLoader(str(tmp_path / "gpt2"), "cpu", quantize="auto", cpu_engine="auto").start()
    assert loader.wait(120) and loader.state == "ready"
    assert loader.get().engine == "torch"
    assert "Runs on cpu: int8 weights" in loader.status() and "Runs on torch, not " in loader.status()
    assert "not OpenVINO: it could not be converted" in loader.status()


def test_a_bf16_checkpoint_converts_to_fused_compressed_matmuls(tmp_path):
    """Dolly is published in bf16. Its 8-bit weights must reach OpenVINO's CPU plugin as compressed
    FullyConnected layers (read as int8 on every token); traced in bf16 they were plain matmuls after a
    reference-kernel conversion of every weight, 10x slower (bench/RESULTS.md). They are symmetric (signed
    int8, no zero point: `i8`), whose unpacking is what bounds a decoded token on an AVX2 CPU: 21% faster
    there than the unsigned weights with zero points (`u8`) of nncf's default."""
    import torch
    from transformers import AutoModelForCausalLM

    path = save_scripted_model(tmp_path / "bf16", SCRIPT)
    AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).save_pretrained(path)
    lm = load_model(str(path), "cpu", quantize="int8", cpu_engine="openvino")
    runtime = [op.get_rt_info() for op in lm.model.compiled.get_runtime_model().get_ops()]
    fused = [info for info in runtime if info["layerType"].astype(str) == "FullyConnected"]
    linears = 4 * lm.model.config.num_hidden_layers + 1  # qkv, dense, two MLP matmuls per layer; the head
    assert len(fused) == linears and all(info["runtimePrecision"].astype(str) == "i8" for info in fused)
    ids = encode_prompt(lm.tokenizer, "What is the capital of France?")
    assert list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))[-1] == SCRIPT.strip()


# --- the engine ------------------------------------------------------------------------------------

def test_greedy_and_seeded_replies_equal_the_torch_path(tiny):
    """`none` keeps the checkpoint's float32 weights and computes in float32: token for token the
    torch path's reply, greedy and sampled with a seed (temperature, top-k, top-p, repetition penalty)."""
    torch_lm = load_model(str(tiny), "cpu", quantize="none", cpu_engine="torch")
    ov_lm = load_model(str(tiny), "cpu", quantize="none", cpu_engine="openvino")
    assert ov_lm.engine == "openvino" and ov_lm.mode == "OpenVINO, the checkpoint's weights, float32 activations"
    ids = encode_prompt(torch_lm.tokenizer, "Name three rivers.", "Rivers of Europe.")
    for settings in (dict(do_sample=False, max_new_tokens=40),
                     dict(do_sample=False, max_new_tokens=40, repetition_penalty=1.3),
                     dict(do_sample=True, seed=7, temperature=0.7, top_k=50, top_p=0.9, max_new_tokens=40),
                     dict(do_sample=True, seed=8, temperature=1.3, repetition_penalty=1.2, max_new_tokens=40)):
        expected = reply_ids(torch_lm, ids, **settings)
        assert len(expected) > 5
        assert reply_ids(ov_lm, ids, **settings) == expected, settings


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_8_and_4_bit_formats_answer(tmp_path, fmt):
    lm = load_model(str(save_scripted_model(tmp_path / "m", SCRIPT)), "cpu", quantize=fmt, cpu_engine="openvino")
    assert lm.engine == "openvino" and lm.quantize == fmt and lm.mode.startswith(f"OpenVINO, {fmt} weights")
    ids = encode_prompt(lm.tokenizer, "What is the capital of France?")
    assert list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))[-1] == SCRIPT.strip()
    # --quantize auto is 8-bit on a CPU: the cached int8 conversion.
    loader = ModelLoader(str(tmp_path / "m"), "cpu", quantize="auto" if fmt == "int8" else fmt, cpu_engine="openvino").start()
    assert loader.wait(120)
    assert f"Runs on cpu: OpenVINO, {fmt} weights, {lm.dtype} activations;" in loader.status()
    assert "Runs on torch" not in loader.status()


def resident_kb(path) -> int:
    """kB of `path` resident in this process's mappings of it (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
            inside = len(fields) == 6 and fields[5] == os.path.realpath(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")
def test_the_mapped_weights_are_given_back_once_the_plugin_holds_its_own(tmp_path):
    """OpenVINO maps model.bin, and on an AVX-512 CPU the plugin repacks every weight at the first
    inference: left mapped, the weights were resident twice (2.8b int8: 5.8 GB RSS against 3.0). Loading
    gives the mapping's pages back (without it, the whole file stayed resident), and answering is as right
    as before: a page read again comes back from the file. (What answering reads back depends on the CPU:
    on AVX-512 only what the plugin does not repack, 0.13 of 2.78 GB on the 2.8b shape; on an AVX2-only
    CPU the plugin reads the 8-bit weights in place, so they are resident once, from the file.)"""
    lm = load_model(str(save_scripted_model(tmp_path / "m", SCRIPT, hidden_size=128)), "cpu", quantize="int8",
                    cpu_engine="openvino")
    weights = lm.model.folder / "model.bin"
    mapped = [line for line in open("/proc/self/maps") if line.rstrip().endswith(os.path.realpath(weights))]
    assert mapped and all("w" not in line.split()[1] for line in mapped)  # mapped, read-only
    assert resident_kb(weights) == 0
    ids = encode_prompt(lm.tokenizer, "What is the capital of France?")
    assert list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))[-1] == SCRIPT.strip()


def test_the_engine_reads_exactly_the_ids_of_encode_prompt(tmp_path):
    """With the real Pythia tokenizer: the engine gets dolly.prompt.encode_prompt's ids (markers typed
    by a user stay text), and never tokenizes anything itself."""
    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Pythia tokenizer is not in ../shared/data/pythia-tokenizer")
    path = save_tiny_model(tmp_path / "pythia", tokenizer, dolly_tokens=True)
    lm = load_model(str(path), "cpu", quantize="none", cpu_engine="openvino")
    fed = []
    infer = lm.model.batch._infer  # what each step hands OpenVINO: each reply's tokens and where they go
    lm.model.batch._infer = lambda rows, feeds, **step: fed.extend((list(f), r.length) for r, f in zip(rows, feeds)) or \
        infer(rows, feeds, **step)
    message, context = "Say ### Response: and <|endoftext|> back", "### End\n### Instruction: not a marker"
    engine = LocalEngine(loader=Ready(lm))
    reply = list(engine.chat(message, context, max_new_tokens=6, do_sample=False))
    assert fed[0] == (encode_prompt(lm.tokenizer, message, context), 0)
    # Then one new token at a time, each at the next position.
    assert [start for _, start in fed[1:]] == [len(fed[0][0]) + i for i in range(len(fed) - 1)]
    assert all(len(ids) == 1 for ids, _ in fed[1:]) and reply is not None


def test_stop_ends_the_generation_in_the_engine_and_replies_at_once_keep_apart(looping):
    lm = load_model(str(looping), "cpu", quantize="int8", cpu_engine="openvino")
    engine = LocalEngine(loader=Ready(lm), concurrency=2)
    before = chat.generation_threads()
    generation = engine.chat("Go on", max_new_tokens=1000, do_sample=False)
    stream = iter(generation)
    assert next(stream)  # the reply is streaming
    stop_and_check(generation.cancel, before)
    # Two replies at once, each in its own infer request: each equals the same request alone.
    alone = {n: list(engine.chat("Go on", max_new_tokens=n, do_sample=False))[-1] for n in (9, 17)}
    together, threads = {}, []
    for n in (9, 17):
        threads.append(threading.Thread(target=lambda n=n: together.update(
            {n: list(engine.chat("Go on", max_new_tokens=n, do_sample=False))[-1]})))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert together == alone and alone[9] != alone[17]


# --- the flag and the app --------------------------------------------------------------------------

def test_cpu_engine_flag_env_and_errors(monkeypatch, capsys):
    monkeypatch.delenv("DOLLY_CPU_ENGINE", raising=False)
    assert app.parse_args([]).cpu_engine == "auto"
    assert app.parse_args(["--cpu-engine", "torch"]).cpu_engine == "torch"
    monkeypatch.setenv("DOLLY_CPU_ENGINE", "OpenVINO")
    assert app.parse_args([]).cpu_engine == "openvino"
    monkeypatch.setenv("DOLLY_CPU_ENGINE", "llama")
    with pytest.raises(SystemExit):
        app.parse_args([])
    assert "--cpu-engine (or DOLLY_CPU_ENGINE) must be one of auto, llamacpp, openvino, torch, got 'llama'" in capsys.readouterr().err
    with pytest.raises(ModelError, match="Unknown --cpu-engine 'fast'"):
        load_model("anything", "cpu", cpu_engine="fast")


def test_the_test_helpers_leave_a_benchmarks_apps_on_the_default_engine():
    """tests/conftest.py makes the tests' apps chat through PyTorch, for a pytest run only: a benchmark that
    imports its helpers (bench/chat_cpu.py does) starts apps that run as a user's, on --cpu-engine auto."""
    env = {k: v for k, v in os.environ.items() if k != "DOLLY_CPU_ENGINE"}
    out = subprocess.run([sys.executable, "-c", "import os, tests.conftest, app; "
                          "print(os.environ.get('DOLLY_CPU_ENGINE'), app.parse_args([]).cpu_engine)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", "auto"]
    assert "DOLLY_CPU_ENGINE" in os.environ  # while inside this pytest run the tests' default holds


@pytest.mark.parametrize("engine,cached", [("openvino", "openvino"), ("llamacpp", "gguf")])
def test_the_app_chats_through_each_kept_engine_on_chat_and_v1(tmp_path, dolly_jsonl, cache, engine, cached):
    model = save_scripted_model(tmp_path / "model", SCRIPT)
    demo = serve("--model", model, "--data", dolly_jsonl, "--cpu-engine", engine)
    try:
        answer = chat_once_loaded(demo.local_url, "What is the capital of France?")
        assert answer == SCRIPT.strip()
        assert len(list((cache / cached).iterdir())) == 1  # converted once, into DOLLY_CACHE
        v1 = openai.OpenAI(base_url=f"{demo.local_url.rstrip('/')}/v1", api_key="none", max_retries=0, timeout=120)
        stream = v1.chat.completions.create(model="model", stream=True, temperature=0,
                                            messages=[{"role": "user", "content": "And of France?"}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == SCRIPT.strip()
        cut = v1.completions.create(model="model", prompt=format_prompt("What is the capital?"), temperature=0,
                                    max_tokens=30, stop=["France"])  # the caller's stop string
        assert cut.choices[0].text == "The capital of" and cut.choices[0].finish_reason == "stop"
    finally:
        demo.close()
