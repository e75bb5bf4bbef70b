"""Dolly-shaped records made up on the spot, so no test or benchmark downloads anything.

Every record has the four schema fields; all eight dolly categories appear; contexts are empty for
the categories that have none in dolly-15k and present (some very long, some with blank lines and
non-ASCII text) for the ones that do.
"""
import json
import random
from pathlib import Path

from dolly.data import DOLLY_CATEGORIES

# Categories whose dolly-15k records carry a reference passage in `context`.
CONTEXT_CATEGORIES = ("closed_qa", "information_extraction", "summarization")

WORDS = (
    "the a of and to in is was for on with as by at from that this it be are an which or his her their "
    "river mountain city history science music language computer garden ocean planet energy market "
    "bridge island library theory engine kingdom forest desert museum festival recipe harvest orbit "
    "python database network protocol algorithm"
).split()
# A sprinkle of non-ASCII so every path that handles text meets accents, CJK, RTL and emoji.
UNICODE_WORDS = ["café", "naïve", "Zürich", "東京", "数据", "Ελλάδα", "مرحبا", "🙂", "façade", "São Paulo"]


def _sentence(rng: random.Random, words: int) -> str:
    picked = [rng.choice(UNICODE_WORDS) if rng.random() < 0.03 else rng.choice(WORDS) for _ in range(words)]
    return " ".join(picked).capitalize() + "."


def _text(rng: random.Random, chars: int) -> str:
    sentences, length = [], 0
    while length < chars:
        sentence = _sentence(rng, rng.randint(4, 14))
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def make_records(n: int, seed: int = 0, chars_per_row: int = 300, long_context_every: int = 50) -> list[dict]:
    """`n` records cycling through the eight categories (so each appears whenever n >= 8).

    `chars_per_row` is roughly the instruction + context + response length of a record with a
    context; every `long_context_every`-th record with a context gets one ten times longer, with
    blank lines inside, as Wikipedia passages in dolly-15k do.
    """
    rng = random.Random(seed)
    records = []
    for i in range(n):
        category = DOLLY_CATEGORIES[i % len(DOLLY_CATEGORIES)]
        instruction = _text(rng, max(20, chars_per_row // 8)).rstrip(".") + "?"
        context = ""
        if category in CONTEXT_CATEGORIES:
            context_chars = chars_per_row // 2
            if long_context_every and i % long_context_every < len(DOLLY_CATEGORIES):
                context_chars *= 10
                context = _text(rng, context_chars // 2) + "\n\n" + _text(rng, context_chars // 2)
            else:
                context = _text(rng, context_chars)
        response = _text(rng, max(10, chars_per_row // 3))
        records.append({"instruction": instruction, "context": context, "response": response, "category": category})
    return records


def write_jsonl(path, records) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
