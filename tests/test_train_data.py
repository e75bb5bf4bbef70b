"""Tokenization with response-only labels, dropping over-long records, the split, and the batching."""
import pandas as pd
import pytest
import torch

from tests.dolly_data import make_records
from tests.tiny_model import pythia_tokenizer, save_tiny_model, small_tokenizer
from dolly.data import DataError
from train.data import (IGNORE_INDEX, check_complete, grouped_order, make_collator, padding_fraction, split_rows,
                        tokenize_frame, tokenize_record)
from dolly.prompt import END_KEY, RESPONSE_KEY_NL, add_special_tokens, format_completion, format_example


@pytest.fixture(scope="module")
def small_tok():
    tokenizer = small_tokenizer()
    add_special_tokens(tokenizer)
    return tokenizer


@pytest.fixture(scope="module")
def real_tok():
    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Pythia tokenizer is not in ../shared/data/pythia-tokenizer")
    add_special_tokens(tokenizer)
    return tokenizer


def _check_masking(tokenizer, record):
    row = tokenize_record(tokenizer, record["instruction"], record["context"], record["response"])
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels)
    # Same ids as tokenizing the whole example at once: the split at the marker changes nothing.
    assert ids == tokenizer(format_example(record["instruction"], record["response"], record["context"]),
                            add_special_tokens=False)["input_ids"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    # Everything before the first label is prompt, ending with the `### Response:\n` token.
    assert all(label == IGNORE_INDEX for label in labels[:first])
    assert ids[first - 1] == tokenizer.convert_tokens_to_ids(RESPONSE_KEY_NL)
    # Everything from there is labelled with its own id: exactly the response and `### End`.
    assert labels[first:] == ids[first:]
    assert tokenizer.decode(labels[first:]) == format_completion(record["response"])
    assert labels[-1] == tokenizer.convert_tokens_to_ids(END_KEY)
    return ids, labels


def test_labels_cover_exactly_response_and_end_small_tokenizer(small_tok):
    records = make_records(16, seed=3)
    assert any(r["context"] for r in records) and any(not r["context"] for r in records)
    for record in records:
        _check_masking(small_tok, record)


def test_labels_cover_exactly_response_and_end_pythia_tokenizer(real_tok):
    assert real_tok.convert_tokens_to_ids([END_KEY, "### Instruction:", RESPONSE_KEY_NL]) == [50277, 50278, 50279]
    for record in make_records(16, seed=4):
        ids, _ = _check_masking(real_tok, record)
        assert 50279 in ids and ids[-1] == 50277


def test_collator_pads_with_eos_and_ignores_padding_in_labels(small_tok):
    rows = [tokenize_record(small_tok, r["instruction"], r["context"], r["response"]) for r in make_records(3, seed=5)]
    batch = make_collator(small_tok)([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (3, width)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]  # right padding
        assert (batch["input_ids"][i, n:] == small_tok.eos_token_id).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()


def test_over_long_records_are_dropped_and_counted_per_category(small_tok):
    frame = pd.DataFrame(make_records(80, seed=6, chars_per_row=200))
    rows, dropped = tokenize_frame(small_tok, frame, max_length=200, progress=False)
    too_long = {}
    for record in frame.itertuples():
        n = len(small_tok(format_example(record.instruction, record.response, record.context),
                          add_special_tokens=False)["input_ids"])
        if n > 200:
            too_long[record.category] = too_long.get(record.category, 0) + 1
    assert dropped == too_long and sum(dropped.values()) > 0
    assert len(rows) + sum(dropped.values()) == len(frame)
    assert all(r["length"] == len(r["input_ids"]) <= 200 for r in rows)  # kept whole, never cut
    assert all(r["labels"][-1] == small_tok.convert_tokens_to_ids(END_KEY) for r in rows)


def test_records_without_an_instruction_or_a_response_are_skipped_and_counted(small_tok):
    records = make_records(20, seed=7, chars_per_row=120)
    records[3]["response"] = ""  # the loader turns null and NaN into ""
    records[8]["instruction"] = " \n "
    records[9]["category"] = ""  # no category: still a record to learn from
    frame = pd.DataFrame(records)
    assert check_complete(frame, "d.jsonl") == {"skipped": 2, "missing": {"instruction": 1, "response": 1, "category": 1}}
    rows, dropped = tokenize_frame(small_tok, frame, max_length=2048, progress=False)
    assert dropped == {} and len(rows) == 18
    # `record` still points at the row of `frame` (the held-out split train/eval_dolly.py recovers)
    assert [r["record"] for r in rows] == [i for i in range(20) if i not in (3, 8)]
    with pytest.raises(DataError, match=r"No record of d\.jsonl has both an instruction and a response \(2 records "
                                        r"have no instruction, 2 no response\)"):
        check_complete(pd.DataFrame([{**r, "response": "" if i % 2 else r["response"],
                                      "instruction": r["instruction"] if i % 2 else ""} for i, r in enumerate(records[:4])]),
                       "d.jsonl")


def test_split_is_deterministic_from_the_seed():
    rows = [{"id": i} for i in range(100)]
    train_a, eval_a = split_rows(rows, 10, seed=42)
    train_b, eval_b = split_rows(rows, 10, seed=42)
    _, eval_c = split_rows(rows, 10, seed=7)
    assert eval_a == eval_b and train_a == train_b
    assert eval_a != eval_c
    assert len(eval_a) == 10 and len(train_a) == 90
    assert {r["id"] for r in train_a}.isdisjoint(r["id"] for r in eval_a)
    assert len(split_rows(rows, 0.25, seed=1)[1]) == 25 and split_rows(rows, 0, seed=1)[1] == []
    with pytest.raises(ValueError, match="test-size"):
        split_rows(rows, 100, seed=1)


def test_grouped_order_is_a_seeded_permutation_with_little_padding(small_tok):
    frame = pd.DataFrame(make_records(400, seed=0))
    rows, _ = tokenize_frame(small_tok, frame, max_length=2048, progress=False)
    lengths = [r["length"] for r in rows]
    order = grouped_order(lengths, 8, seed=42, epoch=0)
    assert sorted(order) == list(range(len(lengths)))
    assert order == grouped_order(lengths, 8, seed=42, epoch=0)  # what --resume relies on
    assert order != grouped_order(lengths, 8, seed=42, epoch=1)  # reshuffled every epoch
    assert max(lengths[i] for i in order[:8]) == max(lengths)  # longest batch first: OOM at step 1
    ours = padding_fraction(lengths, order, 8)
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    seeds = padding_fraction(lengths, random_order, 8, pad_to_multiple_of=8)
    assert ours <= 0.05 < seeds


def test_rows_of_a_padded_batch_do_not_see_each_other(tmp_path, small_tok):
    """Each row is one record and padding is masked: logits of a record are the same alone and in a
    batch with longer records."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(save_tiny_model(tmp_path / "m", small_tokenizer(), dolly_tokens=True))
    model.eval()
    rows = [tokenize_record(small_tok, r["instruction"], r["context"], r["response"]) for r in make_records(4, seed=9)]
    batch = make_collator(small_tok)([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(together[i, :len(row["input_ids"])], alone, atol=1e-5, rtol=1e-4)
