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
from train.prompt import add_special_tokens, format_example

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
