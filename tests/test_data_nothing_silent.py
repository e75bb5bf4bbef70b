"""Nothing is dropped or bent without a word (issue 14 §2): a folder of data files loads every file (or is
refused, naming the files), and records with missing fields are counted and said, in the shared loader,
in the Explorer (a real launched app, read the way a browser reads it) and in `python -m train`."""
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from dolly.data import REQUIRED_COLUMNS, DataError, load_records, read_dataset
from explorer.loader import DatasetLoader
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import make_records, write_jsonl
from tests.tiny_model import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def mixed_folder(folder: Path, records: list[dict]) -> Path:
    """The issue's folder: a.jsonl, b.csv and c.parquet, a third of `records` each, in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    third = len(records) // 3
    write_jsonl(folder / "a.jsonl", records[:third])
    pd.DataFrame(records[third:2 * third]).to_csv(folder / "b.csv", index=False)
    pd.DataFrame(records[2 * third:]).to_parquet(folder / "c.parquet")
    return folder


def with_gaps(records: list[dict]) -> list[dict]:
    """`records` with fields missing the ways files miss them: null, NaN, empty and blank."""
    records = [dict(r) for r in records]
    records[1]["response"] = None
    records[4]["response"] = ""
    records[12]["instruction"] = "   "  # only spaces: no instruction either
    records[22]["response"] = float("nan")
    records[25]["category"] = None
    return records


# -- the shared loader -------------------------------------------------------------------------


def test_a_folder_of_three_formats_loads_every_file(tmp_path):
    records = make_records(30, seed=1)
    folder = mixed_folder(tmp_path / "mixed", records)
    loaded = read_dataset(folder, progress=False)
    assert loaded.frame[list(REQUIRED_COLUMNS)].to_dict("records") == records  # all 30, in file-name order
    assert loaded.files == ["a.jsonl", "b.csv", "c.parquet"]
    assert loaded.files_note() == "3 files (a.jsonl, b.csv, c.parquet)"
    assert len(load_records(folder, progress=False)) == 30


def test_a_hub_snapshot_folder_loads_its_one_data_file(tmp_path, dolly_records):
    """What `hf download databricks/databricks-dolly-15k --repo-type dataset --local-dir DIR` leaves."""
    folder = tmp_path / "dolly-15k"
    write_jsonl(folder / "databricks-dolly-15k.jsonl", dolly_records)
    (folder / "README.md").write_text("---\nlicense: cc-by-sa-3.0\n---\n# databricks-dolly-15k\n")
    (folder / ".gitattributes").write_text("*.jsonl filter=lfs diff=lfs merge=lfs -text\n")
    (folder / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download" / "databricks-dolly-15k.jsonl.metadata").write_text("abc\n")
    loaded = read_dataset(folder, progress=False)
    assert loaded.frame[list(REQUIRED_COLUMNS)].to_dict("records") == dolly_records
    assert loaded.files == ["databricks-dolly-15k.jsonl"] and loaded.files_note() == ""


def test_files_with_other_columns_are_refused_naming_the_file(tmp_path):
    folder = tmp_path / "odd"
    records = make_records(6, seed=2)
    write_jsonl(folder / "a.jsonl", [{**r, "source": "wiki"} for r in records[:3]])
    write_jsonl(folder / "b.jsonl", records[3:])
    with pytest.raises(DataError) as err:
        load_records(folder, progress=False)
    message = str(err.value)
    assert str(folder / "b.jsonl") in message and "it lacks source, which a.jsonl has" in message
    assert "same columns" in message and "one file" in message


def test_a_folder_holding_train_and_test_splits_is_refused(tmp_path):
    folder = tmp_path / "splits"
    records = make_records(8, seed=3)
    write_jsonl(folder / "train.jsonl", records[:6])
    write_jsonl(folder / "test.jsonl", records[6:])
    with pytest.raises(DataError) as err:
        load_records(folder, progress=False)
    message = str(err.value)
    assert "test: test.jsonl" in message and "train: train.jsonl" in message
    assert f"e.g. {folder / 'train.jsonl'}" in message


def test_a_folder_without_data_files_names_what_it_holds(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("hi")
    (folder / "todo.txt").write_text("hi")
    with pytest.raises(DataError, match=r"holds no data files \(it has README\.md, todo\.txt\)\. A folder is read as "
                                        r"every data file in it"):
        load_records(folder, progress=False)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_missing_fields_are_counted_per_field(tmp_path, suffix):
    records = with_gaps(make_records(30, seed=4))
    path = tmp_path / f"gaps{suffix}"
    if suffix == ".jsonl":  # null, NaN (json.dumps writes it as NaN, which Python's json reads) and ""
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif suffix == ".csv":  # an empty cell is the only way a CSV misses a value
        pd.DataFrame(records).to_csv(path, index=False)
    else:
        pd.DataFrame(records).to_parquet(path)
    loaded = read_dataset(path, progress=False)
    assert len(loaded.frame) == 30  # the loader keeps them all; what to do with them is the caller's
    assert loaded.missing == {"instruction": 1, "response": 3, "category": 1}
    assert loaded.missing_note() == "3 records have no response, 1 no instruction, 1 no category"


# -- the Explorer --------------------------------------------------------------------------------


def _loaded(source) -> DatasetLoader:
    dataset = DatasetLoader(str(source)).start()
    assert dataset.wait(60), "the test dataset did not load within 60 s"
    return dataset


def _page_components(url: str) -> dict:
    """The Explorer's components as the page gets them from the real server's /config, by elem_id."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/config", timeout=60) as answer:
        config = json.load(answer)
    return {c["props"]["elem_id"]: c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}


@pytest.mark.parametrize("case", ["folder", "gaps", "empty"])
def test_the_explorer_says_what_it_read_and_what_was_missing(tmp_path, case):
    if case == "folder":
        source = mixed_folder(tmp_path / "mixed", make_records(30, seed=1))
    elif case == "gaps":
        source = write_jsonl(tmp_path / "gaps.jsonl", with_gaps(make_records(30, seed=4)))
    else:
        source = tmp_path / "empty.jsonl"
        source.write_text("")
    dataset = _loaded(source)
    demo = serve("--data", source, *NO_MODEL, dataset=dataset)
    try:
        page = _page_components(demo.local_url)
    finally:
        demo.close()
    note, body = page["explorer-loading"], page["explorer-body"]
    assert note["visible"] is True
    if case == "folder":
        assert "Dataset ready:" in note["value"]
        assert "30 rows from 3 files (a.jsonl, b.csv, c.parquet)" in note["value"]
    elif case == "gaps":
        assert "30 rows" in note["value"]
        assert "3 records have no response, 1 no instruction, 1 no category." in note["value"]
    else:  # a clear empty state, not "Dataset loaded"/"ready" above a table of nothing
        assert "The dataset is empty:" in note["value"] and "has no records" in note["value"]
        assert "ready" not in note["value"] and body["visible"] is False
    assert dataset.status() == note["value"]


@pytest.mark.parametrize("case", ["gaps", "empty"])
def test_the_explorer_page_says_it_once_a_slow_load_ends(tmp_path, page, case):
    """The page opened while the data loads: the poll that finds it loaded shows the note (the other
    path to the same words as the test above, which finds the data loaded when the page is drawn)."""
    if case == "gaps":
        source = write_jsonl(tmp_path / "gaps.jsonl", with_gaps(make_records(30, seed=4)))
    else:
        source = tmp_path / "empty.jsonl"
        source.write_text("")
    release = threading.Event()
    dataset = DatasetLoader(str(source), load=lambda name: release.wait(60) and dataset._read(name))
    demo = serve("--data", source, *NO_MODEL, dataset=dataset)
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Explorer").click()
        page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText.includes('Loading dataset')")
        release.set()
        if case == "gaps":
            page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText"
                                   ".includes('3 records have no response, 1 no instruction, 1 no category.')")
            assert page.locator("#explorer-body").is_visible()
        else:
            page.wait_for_function("() => document.querySelector('#explorer-loading')?.innerText"
                                   ".includes('The dataset is empty:')")
            page.wait_for_selector("#explorer-body", state="hidden")
    finally:
        demo.close()


def test_a_complete_file_adds_no_note(dolly_jsonl):
    dataset = _loaded(dolly_jsonl)
    assert dataset.note() == "" and "Dataset ready" in dataset.status()


# -- python -m train -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


def _train(tiny, data, out, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "train", "--base-model", str(tiny), "--data", str(data), "--output-dir", str(out),
               "--max-length", "256", "--test-size", "4", "--per-device-batch-size", "4", "--max-steps", "1",
               "--warmup-steps", "0", "--save-steps", "1", "--samples-per-category", "0", *extra]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_training_reads_every_file_and_skips_incomplete_records_saying_so(tmp_path, tiny):
    records = with_gaps(make_records(30, seed=4, chars_per_row=120))
    folder = mixed_folder(tmp_path / "mixed", records)
    out = tmp_path / "out"
    run = _train(tiny, folder, out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (f"[train] 30 records from {folder}, read from 3 files (a.jsonl, b.csv, c.parquet); 3 records have no "
            "response, 1 no instruction, 1 no category; skipping the 4 without an instruction or a response") in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_records"] + metrics["eval_records"] == 26  # 30 read, 4 skipped, none too long
    assert metrics["skipped_incomplete"] == 4
    assert metrics["missing_fields"] == {"instruction": 1, "response": 3, "category": 1}


@pytest.mark.parametrize("case", ["no responses", "empty file", "folder of empty files"])
def test_training_on_nothing_is_an_error_naming_the_data(tmp_path, tiny, case):
    if case == "no responses":
        data = write_jsonl(tmp_path / "questions.jsonl", [{**r, "response": None} for r in make_records(12, seed=5)])
        expected = f"No record of {data} has both an instruction and a response (12 records have no response)"
    elif case == "empty file":
        data = tmp_path / "empty.jsonl"
        data.write_text("")
        expected = f"No records to train on in {data}"
    else:
        data = tmp_path / "empties"
        data.mkdir()
        (data / "a.jsonl").write_text("")
        (data / "b.csv").write_text("")
        expected = f"No records to train on in {data}"
    out = tmp_path / "out"
    run = _train(tiny, data, out)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert expected in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()
