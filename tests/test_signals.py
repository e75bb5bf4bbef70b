"""Quality signals (explorer/signals.py) measured on planted defects: precision and recall per signal on
the planted set, false flags on clean records, and the parts that must agree with the libraries and the
training they stand for (datasketch's MinHash and LSH, train.data's token counts)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer import signals
from explorer.signals import SIGNALS, compute
from tests.signal_data import PII, clean_records, planted_records

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pythia-tokenizer"
MAX_LENGTH = 512


def _tokenizer():
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    from dolly.prompt import add_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    add_special_tokens(tokenizer)  # as train/train.py prepares it
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


@pytest.fixture(scope="module")
def planted(tokenizer):
    records, truth = planted_records()
    frame = pd.DataFrame(records)
    kwargs = {"tokenizer": tokenizer, "max_length": MAX_LENGTH} if tokenizer is not None else {}
    return frame, truth, compute(frame, **kwargs)


@pytest.fixture(scope="module")
def clean(tokenizer):
    frame = pd.DataFrame(clean_records(2000, seed=7))
    kwargs = {"tokenizer": tokenizer, "max_length": MAX_LENGTH} if tokenizer is not None else {}
    return frame, compute(frame, **kwargs)


def _scores(flags: np.ndarray, truth: set) -> tuple[float, float]:
    found = set(np.flatnonzero(flags).tolist())
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth))


def test_precision_recall_per_signal_on_planted_defects(planted, clean, capsys):
    frame, truth, result = planted
    clean_frame, clean_result = clean
    rows = []
    for name in SIGNALS:
        if name == "too_long" and result.token_counts is None:
            continue
        precision, recall = _scores(result.flags[name], truth[name])
        false_rate = clean_result.flags[name].mean()
        rows.append((name, len(truth[name]), precision, recall, false_rate))
    with capsys.disabled():
        print(f"\n{'signal':18s} {'planted':>7s} {'precision':>9s} {'recall':>6s} {'clean flagged':>13s}")
        for name, planted_count, precision, recall, false_rate in rows:
            print(f"{name:18s} {planted_count:7d} {precision:9.3f} {recall:6.3f} {false_rate:13.2%}")
    for name, _, precision, recall, false_rate in rows:
        assert precision >= 0.95 and recall >= 0.95, (name, precision, recall)
        assert false_rate <= 0.01, (name, false_rate)
    assert {r[0] for r in rows} >= set(SIGNALS) - {"too_long"}
    assert result.main_language == clean_result.main_language == "en"


def test_too_long_counts_tokens_as_training_does(tokenizer):
    if tokenizer is None:
        pytest.skip(f"the Pythia tokenizer is not at {TOKENIZER_DIR}")
    from train.data import tokenize_record

    records = clean_records(40, seed=3)
    records[1]["response"] = "It ends here ### End and ### Response: goes on"  # markers as plain text
    records[2]["context"] = "   "  # a blank context leaves the Input: block out
    records[3]["instruction"] = "### Instruction:\nnested"
    frame = pd.DataFrame(records)
    counts = signals.token_counts(tokenizer, frame)
    expected = [len(tokenize_record(tokenizer, r["instruction"], r["context"], r["response"])["input_ids"]) for r in records]
    assert counts.tolist() == expected
    result = compute(frame, tokenizer=tokenizer, max_length=int(np.median(expected)))
    assert result.flags["too_long"].tolist() == [c > int(np.median(expected)) for c in expected]


def test_too_long_with_a_base_tokenizer_without_dolly_markers(tokenizer):
    if tokenizer is None:
        pytest.skip(f"the Pythia tokenizer is not at {TOKENIZER_DIR}")
    from transformers import AutoTokenizer

    from train.data import tokenize_record

    base = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))  # markers are plain text here
    records = clean_records(10, seed=4)
    counts = signals.token_counts(base, pd.DataFrame(records))
    assert counts.tolist() == [len(tokenize_record(base, r["instruction"], r["context"], r["response"])["input_ids"])
                               for r in records]


def test_spans_point_at_what_was_found(planted):
    frame, truth, result = planted
    text = lambda row, span: frame.at[row, span.field][span.start:span.end]  # noqa: E731
    for row in truth["citations"]:
        spans = result.spans_of(row, "citations")
        assert spans and all(text(row, s).startswith("[") and text(row, s).endswith("]") for s in spans)
    kinds = set()
    for row in truth["pii"]:
        spans = result.spans_of(row, "pii")
        assert spans, row
        for span in spans:
            found = text(row, span)
            kinds.add(span.label)
            assert any(found in sentence for sentence in PII.values()), found
    assert kinds == {"email", "phone", "ipv4", "ipv6", "card"}
    for row in truth["copied"]:
        for span in result.spans_of(row, "copied"):
            copied = text(row, span)
            assert copied in frame.at[row, "context"] or copied == frame.at[row, "instruction"]
    for row in truth["duplicate"]:
        group = result.group(row)
        assert len(group) >= 2 and row in group and result.duplicate_group[row] == group.min()
        assert "group" in result.spans_of(row, "duplicate")[0].label
    assert result.of_row(next(iter(truth["language"]))) == ["language"]


def test_pii_patterns_and_near_misses():
    records = clean_records(8, seed=5)
    texts = [
        ("Write to ops@dolly.example.org today.", "email"),
        ("Call +1 212-555-0199 now.", "phone"),
        ("Ping 10.0.0.1 first.", "ipv4"),
        ("Use fe80::1ff:fe23:4567:890a on the link.", "ipv6"),
        ("Card 378282246310005 was charged.", "card"),
        ("Python 3.11.4 was released; pi is 3.14159; the year 1999.", None),
        ("The ratio was 1:2:3 and the time 10:30:00; std::vector is C++.", None),
        ("Reference number 4111 1111 1111 1112 (fails Luhn) and ISBN 978-0-13-235088-4.", None),
    ]
    for record, (sentence, _) in zip(records, texts):
        record["response"] = sentence
    result = compute(pd.DataFrame(records))
    for row, (sentence, kind) in enumerate(texts):
        labels = [s.label for s in result.spans_of(row, "pii")]
        assert labels == ([kind] if kind else []), (sentence, labels)


def test_luhn():
    assert signals.luhn_ok("4539148803436467") and signals.luhn_ok("378282246310005")
    assert not signals.luhn_ok("4539148803436468")


def test_minhash_signatures_equal_datasketch():
    from datasketch import MinHash

    texts = ["what is the history of the danube river", "write a short poem about glaciers please", "abcdef", "abc", ""]
    arr = signals._strings(pd.Series(texts))
    data, offsets = signals._buffers(arr)
    hashes, starts = signals.shingle_hashes(data, offsets)
    permutations = MinHash(num_perm=signals.NUM_PERM, seed=1, scheme="affine32").permutations
    ours = signals.minhash_signatures(hashes, starts, permutations)

    def hashfunc(window: bytes) -> int:  # the shingle hash of shingle_hashes, one window at a time
        return ((int.from_bytes(window, "little") * 0x9E3779B97F4A7C15) % 2**64) >> 32

    for i, text in enumerate(texts):
        raw = text.encode()
        windows = [raw[j:j + signals.SHINGLE] for j in range(len(raw) - signals.SHINGLE + 1)]
        assert hashes[starts[i]:starts[i + 1]].tolist() == [hashfunc(w) for w in windows]
        if windows:
            theirs = MinHash(num_perm=signals.NUM_PERM, scheme="affine32", permutations=permutations, hashfunc=hashfunc)
            theirs.update_batch(windows)
            assert ours[i].tolist() == theirs.hashvalues.tolist()


def test_near_pairs_equal_datasketch_lsh():
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    records, truth = planted_records(n_clean=300, per_signal=10, seed=2)
    norm = signals._normalised(signals._strings(pd.Series([r["instruction"] + " " + r["context"] for r in records])))
    data, offsets = signals._buffers(norm)
    hashes, starts = signals.shingle_hashes(data, offsets)
    permutations = MinHash(num_perm=signals.NUM_PERM, seed=1, scheme="affine32").permutations
    sig = signals.minhash_signatures(hashes, starts, permutations)
    rows = np.arange(len(records))
    ours = {tuple(p) for p in signals.near_pairs(sig, rows, window=len(rows)).tolist()}

    lsh = MinHashLSH(num_perm=signals.NUM_PERM, params=signals.LSH_BANDS)
    sketches = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in sig]
    for row, sketch in enumerate(sketches):
        lsh.insert(row, sketch)
    theirs = {(a, b) for a in rows for b in lsh.query(sketches[a])
              if b > a and sketches[a].jaccard(sketches[b]) >= signals.NEAR_THRESHOLD}
    assert ours == theirs and len(ours) >= 5


def test_progress_is_reported_and_ends_at_one():
    seen = []
    compute(pd.DataFrame(clean_records(50)), progress=lambda fraction, desc="": seen.append((fraction, desc)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    assert any("duplicate" in d for _, d in seen)


def test_empty_frame_and_bad_calls():
    empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in ("instruction", "context", "response", "category")})
    result = compute(empty)
    assert result.num_rows == 0 and result.counts() == {name: 0 for name in SIGNALS}
    with pytest.raises(ValueError, match="category"):
        compute(empty.drop(columns="category"))
    with pytest.raises(ValueError, match="max_length"):
        compute(empty, tokenizer=object())
    with pytest.raises(KeyError, match="Unknown signal"):
        result.rows("typo")


def test_every_signal_has_a_one_line_explanation(planted):
    _, _, result = planted
    assert list(result.flags) == list(SIGNALS)
    for name, text in SIGNALS.items():
        assert text and "\n" not in text, name
