"""Loading databricks-dolly-15k, or any file of the same schema, into one pandas DataFrame.

The Explorer tab, the training script and the evaluation all load data through `load_records`, so a
file the Explorer exports is a file training accepts, and all give the same errors for the same bad input.
"""
import io
import json
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from dolly.source import cached_snapshot, hub_offline, hub_unreachable, is_local

DEFAULT_DATA = "databricks/databricks-dolly-15k"
REQUIRED_COLUMNS = ("instruction", "context", "response", "category")
TEXT_FIELDS = ("instruction", "context", "response")
# The eight categories of databricks-dolly-15k; other datasets of the schema may use their own.
DOLLY_CATEGORIES = (
    "brainstorming",
    "classification",
    "closed_qa",
    "creative_writing",
    "general_qa",
    "information_extraction",
    "open_qa",
    "summarization",
)
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
OFFLINE_HINT = "python app.py --data path/to/databricks-dolly-15k.jsonl"


class DataError(ValueError):
    """Bad or unreachable data, with a message meant for the person who asked for it."""


def load_records(source: str = DEFAULT_DATA, *, progress: bool = True) -> pd.DataFrame:
    """Load `source` (a local .jsonl/.json/.csv/.parquet file or directory, or a Hub dataset id).

    Returns a DataFrame with the four schema columns as strings (missing values become ""),
    followed by any extra columns the data had. Raises DataError with a readable message.
    """
    source = str(source).strip()
    if not source:
        raise DataError("No dataset given. Pass a Hub id or a local file, e.g. --data path/to/file.jsonl")
    if is_local(source):
        frame = _load_local(Path(source).expanduser(), progress)
    else:
        frame = _load_hub(source)
    return _validate(frame, source)


def _load_local(path: Path, progress: bool) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"Data file not found: {path}. Check the path, or pass a Hub dataset id.")
    if path.is_dir():
        return _load_folder(path)
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise DataError(f"Unsupported file type '{suffix}' for {path}: use one of {', '.join(LOCAL_SUFFIXES)}.")
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as err:
            raise DataError(f"{path} is not a readable Parquet file: {err}") from None
    raw = path.read_bytes()
    if suffix in (".jsonl", ".json") and not raw.lstrip()[:1] == b"[":
        # Arrow reads the bytes directly (and checks UTF-8 itself): no Python string of the whole
        # file, which for a big file with non-ASCII text costs seconds and several times its size.
        fast = _read_jsonl_arrow(raw)
        if fast is not None:
            return fast
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not UTF-8 text (bad byte at offset {err.start}, line {line}). "
            "Re-save it as UTF-8 and load it again."
        ) from None
    if not text.strip():
        return pd.DataFrame()  # an empty file: an empty dataset (see _validate)
    if suffix == ".csv":
        try:
            # keep_default_na=False: an empty context is "", not NaN.
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except Exception as err:
            raise DataError(f"{path} is not a readable CSV file: {err}") from None
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from None
        if not all(isinstance(row, dict) for row in rows):
            raise DataError(f"{path}: expected a JSON list of objects, one per record.")
        return pd.DataFrame.from_records(rows)
    return _parse_jsonl(text, path, progress)


def _read_jsonl_arrow(raw: bytes) -> pd.DataFrame | None:
    """Arrow's multi-threaded JSON-lines reader: ~10x faster than json.loads per line on big files.

    Returns None when Arrow cannot read the file (a bad line, mixed types, a BOM): the line-by-line
    parser then reads it, or says which line is wrong.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    if not raw.strip():
        return None
    try:
        table = pa_json.read_json(pa.BufferReader(raw), read_options=pa_json.ReadOptions(block_size=32 << 20))
        table.validate(full=True)  # Arrow's JSON reader lets bad UTF-8 through; this catches it
    except (pa.ArrowException, ValueError):
        return None
    if any(pa.types.is_struct(t) or pa.types.is_list(t) for t in table.schema.types):
        return None  # nested values: leave them as Python objects, as json.loads makes them
    return table.to_pandas()


def _parse_jsonl(text: str, path: Path, progress: bool) -> pd.DataFrame:
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(
        tqdm(lines, desc=f"Loading {path.name}", unit=" rows", disable=not progress or len(lines) < 50_000), 1
    ):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: line {number} is not valid JSON ({err.msg}, column {err.colno}). "
                "Each line of a .jsonl file must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object with the record's fields.")
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _load_folder(path: Path) -> pd.DataFrame:
    # `datasets` reads a folder of data files the way it reads a Hub repo; its errors are about the files.
    import datasets

    try:
        ds = datasets.load_dataset(str(path), split="train")
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"Could not read the folder {path} as a dataset ({type(err).__name__}: {first}). It must hold "
            f"data files of one kind ({', '.join(LOCAL_SUFFIXES)}) with the columns {', '.join(REQUIRED_COLUMNS)}; "
            "or point --data at one file."
        ) from None
    return ds.to_pandas()


def _load_hub(source: str) -> pd.DataFrame:
    unreachable = hub_unreachable()
    if unreachable:
        cached = cached_snapshot(source, "dataset")
        if cached is None:
            raise DataError(
                f"Could not load dataset '{source}': the Hugging Face Hub is not reachable ({unreachable}) and the "
                f"dataset is not in this machine's cache. Download it once (`hf download {source} --repo-type dataset "
                f"--local-dir ./{source.split('/')[-1]}`) and load it from a file: {OFFLINE_HINT}"
            )
        return _load_folder(Path(cached))
    # Imported here: `datasets` is slow to import and only the Hub/folder path needs it.
    import datasets

    try:
        ds = datasets.load_dataset(source, split="train")
    except Exception as err:
        # The Hub client's first line says what went wrong; its exception class name means nothing to a user.
        lines = str(err).strip().splitlines()
        reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else (lines[0][:300] if lines else "no answer")
        raise DataError(
            f"Could not load dataset '{source}' from the Hugging Face Hub ({reason}). "
            f"If the Hub is unreachable, download the data once and load it from a file: {OFFLINE_HINT}"
        ) from None
    return ds.to_pandas()


def _validate(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.empty and len(frame.columns) == 0:
        # An empty file: an empty dataset of the schema, not an error.
        return pd.DataFrame({column: pd.Series([], dtype="str") for column in REQUIRED_COLUMNS})
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"{source} is missing the column(s) {', '.join(missing)}; found: {', '.join(map(str, frame.columns))}. "
            f"Each record needs {', '.join(REQUIRED_COLUMNS)}."
        )
    extra = [column for column in frame.columns if column not in REQUIRED_COLUMNS]
    frame = frame[list(REQUIRED_COLUMNS) + extra].reset_index(drop=True)
    for column in REQUIRED_COLUMNS:
        frame[column] = frame[column].fillna("").astype("str")
    return frame
