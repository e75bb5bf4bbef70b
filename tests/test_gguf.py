"""space/gguf.py: a GPT-NeoX checkpoint written as GGUF and run by llama.cpp itself (the prebuilt xllamacpp wheel).

Nothing of llama.cpp is faked: the file is loaded by llama.cpp's own server, which must produce what the torch
model produces from the same token ids.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dolly.prompt import END_KEY, encode_prompt
from space import gguf
from tests.tiny_model import pythia_tokenizer, save_scripted_model, save_tiny_model

SCRIPT = " The capital of the river is"  # distinct tokens, as save_scripted_model needs (tests/test_chat.py's)

xllamacpp = pytest.importorskip("xllamacpp")


def llama_greedy(path, ids: list[int], tokens: int) -> str:
    """llama.cpp's greedy continuation of the token ids `ids`, as text."""
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 512
    params.special = True  # control tokens (<|endoftext|>, Dolly's markers) appear in the text, as transformers shows them
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(params)
    answer = server.handle_completions({"prompt": ids, "n_predict": tokens, "temperature": 0, "ignore_eos": True,
                                        "cache_prompt": False})
    return answer["choices"][0]["text"]


def torch_greedy(folder, ids: list[int], tokens: int) -> str:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False, eos_token_id=None,
                             pad_token_id=tokenizer.pad_token_id or 0)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=False)


@pytest.mark.parametrize("fmt", ["none", "int8"])
def test_llama_cpp_continues_a_converted_model_as_torch_does(tmp_path, fmt):
    """A random tiny GPT-NeoX (attention, rotary embedding on part of each head, parallel residual, biases all
    matter): llama.cpp's greedy text from the GGUF is torch's. A wrong query/key/value order, rotary width or
    residual layout changes it from the first tokens."""
    folder = save_tiny_model(tmp_path / "tiny", hidden_size=64, num_layers=2, num_heads=4, seed=3)
    ids = AutoTokenizer.from_pretrained(folder).encode("Write a short note about the garden and its trees.")
    path = gguf.write(folder, tmp_path / f"tiny-{fmt}.gguf", fmt)
    assert llama_greedy(path, ids, 24) == torch_greedy(folder, ids, 24)


def test_a_converted_dolly_writes_its_reply_and_the_end_marker_from_our_prompt_ids(tmp_path):
    """A scripted Dolly (space/chat's tests use it too) in the 4-bit format: fed the ids of dolly.prompt's own
    encoding, llama.cpp writes the script and then `### End`, which the GGUF's vocabulary holds as a token."""
    folder = save_scripted_model(tmp_path / "dolly", SCRIPT)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = encode_prompt(tokenizer, "Describe the garden.")
    text = llama_greedy(gguf.write(folder, tmp_path / "dolly.gguf", "int4"), ids, 12)
    assert text.startswith(tokenizer.decode(tokenizer.encode(SCRIPT, add_special_tokens=False)) + END_KEY), text


def test_the_real_pythia_vocabulary_decodes_as_transformers_decodes(tmp_path):
    """With the GPT-NeoX-20B tokenizer (50,277 tokens, its merges and added tokens), llama.cpp turns ids into the
    same text as transformers, accents and spaces included."""
    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Pythia tokenizer is not at ../shared/data/pythia-tokenizer")
    folder = save_tiny_model(tmp_path / "tiny", tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    ids = tokenizer.encode("Zürich's café, naïve — “quoted”\n\tindented  twice", add_special_tokens=False)
    path = gguf.write(folder, tmp_path / "tiny.gguf", "none")
    assert llama_greedy(path, ids, 8) == torch_greedy(folder, ids, 8)
    import gguf as gguf_package

    reader = gguf_package.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == AutoModelForCausalLM.from_pretrained(folder).config.vocab_size


def test_a_checkpoint_that_is_not_gpt_neox_is_refused_and_nothing_is_written(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny", hidden_size=32, num_layers=1, num_heads=2)
    config = (folder / "config.json").read_text().replace('"gpt_neox"', '"llama"')
    (folder / "config.json").write_text(config)
    with pytest.raises(ValueError, match="only GPT-NeoX"):
        gguf.write(folder, tmp_path / "out.gguf", "int8")
    assert list(tmp_path.glob("*.gguf*")) == [] and list(tmp_path.glob(".out.gguf*")) == []
