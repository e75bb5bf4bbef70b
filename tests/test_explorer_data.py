"""Loading dolly-shaped data from files (and the Hub's offline failure): rows, types and every error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dolly.data import REQUIRED_COLUMNS, DataError, load_records
from tests.conftest import free_port
from tests.dolly_data import write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def as_records(frame: pd.DataFrame) -> list[dict]:
    return frame[list(REQUIRED_COLUMNS)].to_dict("records")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet", ".json-list"])
def test_every_local_format_loads_the_same_records(tmp_path, dolly_records, suffix):
    frame = pd.DataFrame(dolly_records)
    if suffix == ".jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", dolly_records)
    elif suffix == ".json":  # JSON lines under a .json name, as some dumps are
        path = write_jsonl(tmp_path / "d.json", dolly_records)
    elif suffix == ".json-list":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(dolly_records, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".csv":
        path = tmp_path / "d.csv"
        frame.to_csv(path, index=False)
    else:
        path = tmp_path / "d.parquet"
        frame.to_parquet(path)
    loaded = load_records(path, progress=False)
    assert list(loaded.columns[:4]) == list(REQUIRED_COLUMNS)
    assert as_records(loaded) == dolly_records  # empty contexts stay "", unicode and blank lines survive


def test_extra_columns_are_kept_and_missing_values_become_empty(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"category": "open_qa", "instruction": "Why?", "response": "Because.", "context": null, "source": "wiki"}\n'
        '\n'  # a blank line is skipped, not an error
        '{"instruction": "Ok", "context": "", "response": "Fine", "category": "brainstorming", "source": "x"}\n',
        encoding="utf-8")
    loaded = load_records(path, progress=False)
    assert list(loaded.columns) == list(REQUIRED_COLUMNS) + ["source"]
    assert loaded["context"].tolist() == ["", ""]
    assert loaded["source"].tolist() == ["wiki", "x"]


def test_a_directory_of_data_files_loads(tmp_path, dolly_records):
    write_jsonl(tmp_path / "train.jsonl", dolly_records[:30])
    assert as_records(load_records(tmp_path, progress=False)) == dolly_records[:30]


def test_missing_file_says_so(tmp_path):
    with pytest.raises(DataError, match=r"Data file not found: .*nope\.jsonl"):
        load_records(tmp_path / "nope.jsonl")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"Unsupported file type '\.txt'.*\.jsonl"):
        load_records(path)


def test_bad_json_line_names_the_line(tmp_path, dolly_records):
    path = write_jsonl(tmp_path / "d.jsonl", dolly_records[:5])
    with path.open("a", encoding="utf-8") as out:
        out.write('{"instruction": "broken", "context": \n')
    with pytest.raises(DataError, match=r"line 6 is not valid JSON"):
        load_records(path, progress=False)


def test_a_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "context": "", "response": "b", "category": "open_qa"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"line 2 is a JSON list, not an object"):
        load_records(path, progress=False)


def test_missing_column_says_which_and_what_was_found(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "response": "b", "label": "open_qa"}\n')
    with pytest.raises(DataError) as err:
        load_records(path, progress=False)
    message = str(err.value)
    assert "missing the column(s) context, category" in message
    assert "found: instruction, response, label" in message


def test_not_utf8_says_where(tmp_path):
    path = tmp_path / "d.jsonl"
    good = '{"instruction": "a", "context": "", "response": "b", "category": "open_qa"}\n'
    path.write_bytes(good.encode() + '{"instruction": "caf\xe9", "context": "", "response": "b", "category": "open_qa"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text .*line 2.*Re-save it as UTF-8"):
        load_records(path, progress=False)


def test_utf8_with_bom_loads(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"instruction": "é", "context": "", "response": "b", "category": "open_qa"}\n'.encode())
    assert load_records(path, progress=False)["instruction"].tolist() == ["é"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_empty_file_is_an_empty_dataset(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("")
    loaded = load_records(path, progress=False)
    assert len(loaded) == 0 and list(loaded.columns) == list(REQUIRED_COLUMNS)


def _load_from_hub_in_subprocess(env_updates: dict, tmp_path) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE at import, hence a fresh interpreter."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", **env_updates}
    code = ("from dolly.data import load_records, DataError\n"
            "try:\n    load_records('someone/dolly-like')\n"
            "except DataError as err:\n    print('DataError:', err)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_hub_offline_mode_gives_the_offline_form(tmp_path):
    result = _load_from_hub_in_subprocess({"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert "DataError: Could not load dataset 'someone/dolly-like'" in result.stdout, result.stderr
    assert "offline mode is on" in result.stdout
    assert "python app.py --data path/to/" in result.stdout


def test_hub_unreachable_gives_the_offline_form(tmp_path):
    # The Hub at a closed local port: the real HTTP client meets a refused connection.
    result = _load_from_hub_in_subprocess({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    assert "DataError: Could not load dataset 'someone/dolly-like'" in result.stdout, result.stderr
    assert "python app.py --data path/to/" in result.stdout
    assert "Traceback" not in result.stdout
