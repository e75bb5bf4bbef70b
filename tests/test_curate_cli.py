"""`python -m explorer.curate` through the real command line: decisions from a real store, the citation fix,
dropped signals, every output format, bad input with exit status 2 and the input untouched, and the curated
file fed to a short real `python -m train` run on CPU."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dolly.curation import dataset_key, open_store
from dolly.data import load_records
from explorer.curate import main
from explorer.signals import SIGNALS, compute, remove_citations
from tests.conftest import train_briefly
from tests.dolly_data import make_records, write_jsonl
from tests.signal_data import planted_records
from tests.tiny_model import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def curate(*argv, env=None):
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "explorer.curate", *map(str, argv)], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    records, truth = planted_records(n_clean=120, per_signal=6, seed=4)
    return write_jsonl(tmp_path_factory.mktemp("data") / "planted.jsonl", records), records, truth


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


def test_remove_citations_removes_what_the_signal_finds():
    assert remove_citations("The capital.[1] It has [2][3] parks [citation needed].") == "The capital. It has parks."
    assert remove_citations("In France [12], in 1850 [a].") == "In France, in 1850."
    assert remove_citations("a [[1]2] b") == "a b"
    assert remove_citations("keep [this one], [x1] and [2020 plan]") == "keep [this one], [x1] and [2020 plan]"
    records, truth = planted_records(n_clean=100, per_signal=8, seed=2)
    frame = pd.DataFrame(records)
    assert compute(frame).counts()["citations"] == len(truth["citations"])
    fixed = frame.copy()
    for name in ("context", "response"):
        fixed[name] = fixed[name].map(remove_citations)
    assert compute(fixed).counts()["citations"] == 0
    changed = {i for i in range(len(frame)) if not frame.iloc[i].equals(fixed.iloc[i])}
    assert changed == truth["citations"]  # nothing else touched


def test_cli_applies_decisions_fixes_drops_and_training_takes_it(tmp_path, planted, tiny):
    data, records, truth = planted
    before = data.read_bytes(), data.stat().st_mtime_ns
    key = dataset_key(load_records(str(data), progress=False))
    db = tmp_path / "store" / "curation.sqlite3"
    citation_row = min(truth["citations"])
    with open_store(db) as store:
        store.edit(key, 0, 0, {"response": "A response fixed by a person [7]."}, author="ann")
        store.exclude(key, 1, 0, "off topic", author="ann")
        store.accept(key, 2, 0, author="bob")
        store.edit(key, citation_row, 0, {"instruction": "Edited, and its citation still fixed."}, author="bob")
    out = tmp_path / "out" / "curated.jsonl"
    done = curate(data, "--db", db, "--fix", "citations", "--drop", "empty,duplicate", "--drop", "language",
                  "--curation-column", "--output", out)
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert f"Read {len(records):,} records from {data}" in report and key in report
    assert f"Curation decisions from {db}: 2 edited, 1 excluded (left out), 1 accepted." in report
    markers = len(truth["citations"]) + 1  # the planted ones and the one in the edited response
    assert re.search(rf"Fixed citations: {markers} markers removed", report)
    header = next(line for line in report.splitlines() if line.split()[:1] == ["records"])
    assert header.split() == ["records", *[s for s in SIGNALS if s != "too_long"]]  # no tokenizer: no too_long
    all_row = next(line for line in report.splitlines() if line.startswith("(all)")).split()
    assert int(all_row[1]) == len(records) - 1 and int(all_row[2]) == 0  # the excluded one gone; citations fixed
    dropped = {"empty": len(truth["empty"]), "duplicate": len(truth["duplicate"]) // 2, "language": len(truth["language"])}
    assert f"empty {dropped['empty']}, duplicate {dropped['duplicate']} (the first of each group kept), " \
           f"language {dropped['language']}" in report
    assert data.read_bytes() == before[0] and data.stat().st_mtime_ns == before[1]  # the input untouched

    lines = out.read_text().splitlines()
    got = [json.loads(line) for line in lines]
    assert len(got) == len(records) - 1 - sum(dropped.values())
    assert list(got[0]) == ["instruction", "context", "response", "category", "curation"]
    assert got[0]["response"] == "A response fixed by a person." and got[0]["curation"] == "edited"
    assert got[1]["instruction"] == records[2]["instruction"] and got[1]["curation"] == "accepted"
    assert all(r["instruction"] != records[1]["instruction"] for r in got)  # excluded
    assert sum(r["instruction"] == "Edited, and its citation still fixed." for r in got) == 1
    assert sum(r["curation"] == "" for r in got) == len(got) - 3
    back = compute(load_records(str(out), progress=False))
    assert {name: back.counts()[name] for name in ("citations", "empty", "duplicate", "language")} == \
        {"citations": 0, "empty": 0, "duplicate": 0, "language": 0}

    # the same curation as CSV and Parquet: the same records
    for suffix in ("csv", "parquet"):
        other = tmp_path / f"curated.{suffix}"
        assert curate(data, "--db", db, "--fix", "citations", "--drop", "empty,duplicate,language",
                      "--curation-column", "--output", other).returncode == 0
        pd.testing.assert_frame_equal(load_records(str(other), progress=False), load_records(str(out), progress=False))

    # and a short real training run takes the file as it is
    train = train_briefly(tiny, out, tmp_path / "model")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"[train] {len(got)} records from {out}" in train.stdout
    assert (tmp_path / "model" / "config.json").exists()


def test_too_long_needs_a_tokenizer_and_drops_what_training_would(tmp_path, planted, tiny):
    data, records, truth = planted
    out = tmp_path / "short.parquet"
    done = curate(data, "--drop", "too_long", "--output", out)
    assert done.returncode == 2 and "--drop too_long needs the model's tokenizer" in done.stderr and not out.exists()
    done = curate(data, "--no-db", "--drop", "too_long", "--tokenizer", tiny, "--max-length", "256", "--output", out)
    assert done.returncode == 0, done.stderr
    assert "Curation decisions: none applied (--no-db)." in done.stdout
    # exactly the records training would drop (train.data.tokenize_frame, the same tokenizer and length)
    from transformers import AutoTokenizer

    from dolly.prompt import add_special_tokens
    from train.data import tokenize_frame

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    add_special_tokens(tokenizer)
    _, would_drop = tokenize_frame(tokenizer, load_records(str(data), progress=False), 256, progress=False)
    over = sum(would_drop.values())
    assert over >= len(truth["too_long"])
    assert f"Dropped {over} records (one flagged by several signals counts once): too_long {over}." in done.stdout
    kept = load_records(str(out), progress=False)
    assert len(kept) == len(records) - over
    assert tokenize_frame(tokenizer, kept, 256, progress=False)[1] == {}
    assert "too_long" in next(line for line in done.stdout.splitlines() if line.split()[:1] == ["records"])


def test_the_default_store_applies_only_to_its_own_dataset(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_records(12, seed=5))
    other = write_jsonl(tmp_path / "other.jsonl", make_records(12, seed=6))
    db = tmp_path / "app" / "curation.sqlite3"
    with open_store(db) as store:
        store.exclude(dataset_key(load_records(str(data), progress=False)), 3, 0, "wrong", author="ann")
    env = {"DOLLY_CURATION_DB": str(db)}
    done = curate(data, "--output", tmp_path / "a.jsonl", env=env)
    assert done.returncode == 0 and f"Curation decisions from {db}: 0 edited, 1 excluded" in done.stdout
    assert len(load_records(str(tmp_path / "a.jsonl"), progress=False)) == 11
    done = curate(other, "--output", tmp_path / "b.jsonl", env=env)
    assert done.returncode == 0 and f"Curation decisions: none for this dataset in {db}." in done.stdout
    assert len(load_records(str(tmp_path / "b.jsonl"), progress=False)) == 12
    done = curate(data, "--no-db", "--output", tmp_path / "c.jsonl", env=env)
    assert "none applied (--no-db)" in done.stdout and len(load_records(str(tmp_path / "c.jsonl"), progress=False)) == 12
    # no store at all: the default file is not created by reading
    missing = tmp_path / "nowhere" / "curation.sqlite3"
    done = curate(data, "--output", tmp_path / "e.jsonl", env={"DOLLY_CURATION_DB": str(missing)})
    assert done.returncode == 0 and f"none (no store at {missing}" in done.stdout and not missing.exists()


def test_bad_input_is_a_clear_error_with_status_2_and_nothing_written(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in" / "d.jsonl", make_records(8, seed=7))
    before = data.read_bytes()
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"instruction": "a", "context": "", "response": "b", "category": "open_qa"}\n{oops\n')
    taken = tmp_path / "taken.jsonl"
    taken.write_text("someone's file\n")
    out = tmp_path / "out.jsonl"
    cases = [
        ((data, "--drop", "empty,typo", "--output", out), "Unknown signal 'typo': use one or more of citations, empty"),
        ((data, "--fix", "spelling", "--output", out), "invalid choice: 'spelling'"),
        ((tmp_path / "nope.jsonl", "--output", out), "Data file not found"),
        ((bad_json, "--output", out), "line 2 is not valid JSON"),
        ((data, "--output", data, "--force"), "would be the input"),
        ((tmp_path / "in", "--output", tmp_path / "in" / "sub" / "x.jsonl"), "would be inside the input"),
        ((data, "--output", tmp_path / "out.txt"), "unknown file type '.txt'; end it with .jsonl, .csv, .parquet"),
        ((data, "--output", taken), "exists; pass --force to replace it"),
        ((data, "--db", tmp_path / "no-store.sqlite3", "--output", out), "no curation store there"),
        ((data, "--db", taken, "--output", out), "is not an SQLite database"),
        ((data, "--db", "mysql://u:pw@host/db", "--output", out), "takes a file path (SQLite) or a postgresql:// URL"),
        ((data, "--output", out, "--max-length", "0"), "--max-length must be a whole number from 1"),
    ]
    done = curate(*cases[0][0])  # the real command's exit status and stderr
    assert done.returncode == 2 and cases[0][1] in done.stderr and "Traceback" not in done.stderr
    for argv, message in cases:  # the same main(), in this process (each subprocess costs seconds of imports)
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in argv])
        stderr = capsys.readouterr().err
        assert exited.value.code == 2, (argv, stderr)
        assert message in stderr, (argv, stderr)
    assert data.read_bytes() == before and taken.read_text() == "someone's file\n" and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "in", "taken.jsonl"]  # no partial files left
    done = curate(data, "--output", taken, "--force")
    assert done.returncode == 0 and len(load_records(str(taken), progress=False)) == 8


def test_db_url_reads_the_decisions_of_a_postgresql_store(tmp_path):
    from tests import postgres

    why = postgres.unavailable()
    if why:
        pytest.skip(why)
    server = postgres.Server()
    try:
        data = write_jsonl(tmp_path / "d.jsonl", make_records(10, seed=8))
        key = dataset_key(load_records(str(data), progress=False))
        with open_store(server.url) as store:
            store.exclude(key, 0, 0, "off topic", author="ann")
            store.edit(key, 1, 0, {"response": "edited on another replica"}, author="bob")
        out = tmp_path / "curated.parquet"
        done = curate(data, "--db", server.url, "--output", out)
        assert done.returncode == 0, done.stderr
        assert f"Curation decisions from {server.url}: 1 edited, 1 excluded (left out), 0 accepted." in done.stdout
        got = load_records(str(out), progress=False)
        assert len(got) == 9 and got.loc[0, "response"] == "edited on another replica"
        assert list(got.columns) == ["instruction", "context", "response", "category"]  # no --curation-column
    finally:
        server.stop()
