"""Records -> token ids with response-only labels, the held-out split, and length-grouped batches.

Padding is cut by batching records of similar length (no packing), so no example can ever attend to
another and the model needs no special attention masks: each row of a batch is one record.
"""
import math
from collections import Counter

import numpy as np
import torch

from dolly.data import DataError, missing_counts, missing_note
from dolly.prompt import encode_completion, encode_prompt

IGNORE_INDEX = -100  # what torch's cross-entropy (and transformers' loss) skip


def tokenize_record(tokenizer, instruction: str, context: str, response: str) -> dict:
    """input_ids of prompt + completion; labels = IGNORE_INDEX on the prompt, the ids on the completion.

    Prompt and completion are tokenized apart so the boundary is exact: the prompt ends with the
    `### Response:\\n` special token, which splits the text the same way a joint tokenization would.
    The record's own text is plain text: a response that quotes `### End` does not end the example.
    """
    prompt = encode_prompt(tokenizer, instruction, context)
    completion = encode_completion(tokenizer, response)
    return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}


def incomplete(frame) -> np.ndarray:
    """Which records have no instruction or no response (empty or only spaces; the loader made null and NaN
    ""): nothing to learn from, so training skips them (and says how many: see check_complete)."""
    return (frame["instruction"].str.strip().eq("") | frame["response"].str.strip().eq("")).to_numpy(dtype=bool)


def check_complete(frame, source: str) -> dict:
    """{"skipped": records tokenize_frame will skip (see incomplete), "missing": records without each field};
    a DataError naming `source` when no record is left to train on."""
    skipped = int(incomplete(frame).sum())
    missing = missing_counts(frame)
    if len(frame) and skipped == len(frame):
        raise DataError(f"No record of {source} has both an instruction and a response ({missing_note(missing)}): "
                        "nothing to train on. Check that --data is the file you meant and that it has those columns filled.")
    return {"skipped": skipped, "missing": missing}


def tokenize_frame(tokenizer, frame, max_length: int, progress: bool = True):
    """Tokenize every complete record (see incomplete); drop (never cut) those over max_length. Returns
    (rows, dropped per category); each row holds input_ids, labels, length, category and `record`, its
    position in `frame`. Incomplete records are skipped here, so the held-out split that train/eval_dolly.py
    recomputes through this function is the one training made; the caller counts them (check_complete)."""
    from tqdm.auto import tqdm

    rows, dropped = [], Counter()
    skip = incomplete(frame)
    records = frame[["instruction", "context", "response", "category"]].itertuples(index=False)
    for position, (instruction, context, response, category) in enumerate(tqdm(records, total=len(frame), desc="Tokenizing",
                                                         unit=" records", disable=not progress)):
        if skip[position]:
            continue
        row = tokenize_record(tokenizer, instruction, context, response)
        if len(row["input_ids"]) > max_length:
            dropped[category] += 1
            continue
        row["category"] = category
        row["length"] = len(row["input_ids"])
        row["record"] = position  # row of `frame`, to find the text again (sample generations)
        rows.append(row)
    return rows, dict(sorted(dropped.items()))


def split_rows(rows, test_size: float, seed: int):
    """Deterministic train/eval split from the seed. test_size: a count (>= 1), a fraction (< 1) or 0."""
    n_eval = int(test_size) if test_size >= 1 else math.floor(len(rows) * test_size)
    if n_eval >= len(rows):
        raise ValueError(f"--test-size {test_size:g} leaves nothing to train on: only {len(rows)} records fit "
                         "--max-length. Lower --test-size.")
    order = np.random.default_rng(seed).permutation(len(rows))
    eval_idx, train_idx = sorted(order[:n_eval]), sorted(order[n_eval:])
    return [rows[i] for i in train_idx], [rows[i] for i in eval_idx]


def to_dataset(rows):
    import datasets

    columns = ("input_ids", "labels", "length", "category")
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


def grouped_order(lengths, batch_size: int, seed: int, epoch: int, megabatch_mult: int = 64):
    """A shuffled order in which every consecutive `batch_size` slice holds records of similar length.

    Shuffle all records (seed + epoch, so a resumed run replays the same order), cut into mega-batches
    of `megabatch_mult` batches, sort each by length, cut into batches and shuffle the batches, so the
    model does not see lengths in a monotone order; the longest batch goes first so an out-of-memory
    shows up at step 1, not hours in.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * megabatch_mult
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega].tolist(), key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    # A short batch (the tail of a mega-batch) goes last: anywhere else it would shift every later
    # batch boundary of the data loader off the length groups.
    full = [b for b in batches if len(b) == batch_size]
    full = [full[i] for i in rng.permutation(len(full))] + [b for b in batches if len(b) < batch_size]
    longest = max(range(len(full)), key=lambda b: max(lengths[i] for i in full[b]), default=0)
    if full:
        full[0], full[longest] = full[longest], full[0]
    return [i for batch in full for i in batch]


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Yields `grouped_order` for the current epoch. The order depends only on (seed, epoch), not on
    global RNG state, which is what lets `--resume` replay the exact batches of an uninterrupted run.
    `batch_size` is the per-device micro-batch: the data loader cuts the stream into slices of it
    (and, with several processes, deals consecutive slices to the ranks)."""

    def __init__(self, lengths, batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(grouped_order(self.lengths, self.batch_size, self.seed, self.epoch))


def padding_stats(lengths, order, batch_size: int, pad_to_multiple_of: int | None = None):
    """(pad tokens, real tokens) when `order` is cut into batches padded to their longest row."""
    pad = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        width = max(batch)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        pad += width * len(batch) - sum(batch)
        real += sum(batch)
    return pad, real


def padding_fraction(lengths, order, batch_size: int, pad_to_multiple_of: int | None = None) -> float:
    pad, real = padding_stats(lengths, order, batch_size, pad_to_multiple_of)
    return pad / (pad + real) if pad + real else 0.0


def make_collator(tokenizer, pad_to_multiple_of: int | None = None):
    """Pads input_ids with pad (= eos), attention_mask with 0 and labels with IGNORE_INDEX, so padding
    never counts in the loss. Right padding: positions of real tokens are unaffected."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX,
                                  pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
