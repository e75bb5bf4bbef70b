"""Tiny GPT-NeoX models (Pythia's architecture) built from a config, saved like a Hub checkpoint.

Tests pass the saved folder wherever users pass `EleutherAI/pythia-*` or a trained Dolly, so the
real loading code runs. Two tokenizers: the real Pythia one from ../shared when it is there, and a
small byte-level BPE trained on generated dolly text, which every machine can build offline.
"""
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from tests.dolly_data import make_records
from dolly.prompt import add_special_tokens, format_example

PYTHIA_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-tokenizer"


def pythia_tokenizer():
    """The real GPT-NeoX-20B tokenizer, or None when this machine does not have it."""
    if not (PYTHIA_TOKENIZER / "tokenizer.json").exists():
        return None
    return AutoTokenizer.from_pretrained(PYTHIA_TOKENIZER)


def small_tokenizer(vocab_size: int = 1000):
    """A byte-level BPE with Pythia's special-token layout (<|endoftext|> = bos = eos = unk)."""
    bpe = ByteLevelBPETokenizer()
    texts = (format_example(r["instruction"], r["response"], r["context"]) for r in make_records(400, seed=1))
    bpe.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )


def save_tiny_model(
    path,
    tokenizer=None,
    *,
    dolly_tokens: bool = False,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny GPT-NeoX and its tokenizer to `path`; return the path.

    `dolly_tokens=True` saves it as a trained Dolly would be: Dolly's three markers in the
    tokenizer, embeddings resized to match. Otherwise it is a base model, like EleutherAI/pythia-*.
    """
    path = Path(path)
    tokenizer = tokenizer if tokenizer is not None else small_tokenizer()
    if dolly_tokens:
        add_special_tokens(tokenizer)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = GPTNeoXForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_scripted_model(path, script: str, *, loop: bool = False, tokenizer=None, hidden_size: int = 64,
                        num_layers: int = 2, num_heads: int = 4, max_positions: int = 512) -> Path:
    """A tiny Dolly (special tokens included) whose weights are set so that after `### Response:\\n`
    it writes `script` and then `### End` — or, with `loop=True`, repeats `script` forever.

    How: every layer's output projections are zeroed, so the final hidden state is the last token's
    embedding; script token k gets embedding one-hot(k), and the output row of its successor is a
    large multiple of one-hot(k). Each token of `script` must be distinct (it has one successor).
    Returns the path; the script's token ids are in `path / "script_ids.txt"` for tests.
    """
    from dolly.prompt import END_KEY, RESPONSE_KEY_NL, special_token_id

    path = Path(path)
    tokenizer = tokenizer if tokenizer is not None else small_tokenizer()
    save_tiny_model(path, tokenizer, dolly_tokens=True, hidden_size=hidden_size, num_layers=num_layers,
                    num_heads=num_heads, max_positions=max_positions)
    tokenizer = AutoTokenizer.from_pretrained(path)
    script_ids = tokenizer.encode(script, add_special_tokens=False)
    if len(set(script_ids)) != len(script_ids) or len(script_ids) + 1 >= hidden_size:
        raise ValueError(f"script {script!r} must be at most {hidden_size - 2} distinct tokens, got {script_ids}")
    chain = [special_token_id(tokenizer, RESPONSE_KEY_NL)] + script_ids
    end_id = special_token_id(tokenizer, END_KEY)
    model = GPTNeoXForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:  # every layer becomes the identity on the residual stream
            for linear in (layer.attention.dense, layer.mlp.dense_4h_to_h):
                linear.weight.zero_()
                linear.bias.zero_()
        model.gpt_neox.final_layer_norm.weight.fill_(1.0)
        model.gpt_neox.final_layer_norm.bias.zero_()
        embed_in, embed_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        for k, token in enumerate(chain):
            embed_in[token].zero_()
            embed_in[token, k] = 1.0
        for k in range(len(chain)):
            successor = chain[k + 1] if k + 1 < len(chain) else (script_ids[0] if loop else end_id)
            embed_out[successor, k] = 20.0
    model.save_pretrained(path)
    (path / "script_ids.txt").write_text(" ".join(map(str, script_ids)))
    return path
