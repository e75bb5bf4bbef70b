"""Loading databricks-dolly-15k, or any file of the same schema, into one pandas DataFrame.

The Explorer tab, the training script and the evaluation all load data through `load_records`, so a
file the Explorer exports is a file training accepts, and all give the same errors for the same bad input.
"""
import io
import json
from dataclasses import dataclass, field
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
# Fields a record can be missing (null, NaN, empty or only spaces): said when data loads; training
# skips records without an instruction or a response. An empty context is normal (most records).
MISSABLE_FIELDS = ("instruction", "response", "category")
FOLDER_RULE = ("A folder is read as every data file in it and its subfolders ({suffixes}; hidden ones skipped), "
               "all with the same columns, in name order").format(suffixes=", ".join(LOCAL_SUFFIXES))
OFFLINE_HINT = "python app.py --data path/to/databricks-dolly-15k.jsonl"


class DataError(ValueError):
    """Bad or unreachable data, with a message meant for the person who asked for it."""


@dataclass
class Loaded:
    """A loaded dataset and what the person who loaded it should be told about it."""

    frame: pd.DataFrame
    files: list[str] = field(default_factory=list)  # the local data files read, in order ([] from the Hub)
    missing: dict[str, int] = field(default_factory=dict)  # MISSABLE_FIELDS -> records without a value
    sources: dict[str, int] = field(default_factory=dict)  # several sources mixed: records from each, in order

    def files_note(self) -> str:
        """ "3 files (a.jsonl, b.csv, c.parquet)" when a folder gave several files, else "". """
        if len(self.files) < 2:
            return ""
        shown = ", ".join(self.files[:5]) + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")
        return f"{len(self.files)} files ({shown})"

    def missing_note(self) -> str:
        """ "3 records have no response, 1 no instruction", or "" when every record has every field. """
        return missing_note(self.missing)


def load_records(source: str | list[str] = DEFAULT_DATA, *, progress: bool = True) -> pd.DataFrame:
    """Load `source` (a local .jsonl/.json/.csv/.parquet file or directory, or a Hub dataset id).

    Returns a DataFrame with the four schema columns as strings (missing values become ""),
    followed by any extra columns the data had. Raises DataError with a readable message.
    """
    return read_dataset(source, progress=progress).frame


def source_name(source) -> str:
    """A source (or several, mixed) for messages: "a.jsonl" or "a.jsonl + b.jsonl"."""
    return " + ".join(map(str, source)) if isinstance(source, (list, tuple)) else str(source)


def read_dataset(source: str | list[str] = DEFAULT_DATA, *, progress: bool = True) -> Loaded:
    """`load_records`, with the files read and the records missing each field, to say them (see Loaded).

    `source` may be a list of sources to mix (e.g. dolly-15k and a contributions export): each is read by
    the same rule as one, and their records follow each other in the order given (`Loaded.sources` counts
    each's); columns beyond the four are kept where every source has them."""
    if isinstance(source, (list, tuple)) and len(source) == 1:
        source = source[0]
    if isinstance(source, (list, tuple)):
        if not source:
            raise DataError("No dataset given. Pass a Hub id or a local file, e.g. --data path/to/file.jsonl")
        parts = [read_dataset(one, progress=progress) for one in source]
        shared = [c for c in parts[0].frame.columns if all(c in p.frame.columns for p in parts)]
        frame = pd.concat([p.frame[shared] for p in parts], ignore_index=True)
        counts: dict[str, int] = {}
        for one, part in zip(source, parts):
            counts[str(one)] = counts.get(str(one), 0) + len(part.frame)
        return Loaded(frame, [f for p in parts for f in p.files], missing_counts(frame), counts)
    source = str(source).strip()
    if not source:
        raise DataError("No dataset given. Pass a Hub id or a local file, e.g. --data path/to/file.jsonl")
    files = []
    if is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"Data file not found: {path}. Check the path, or pass a Hub dataset id.")
        if path.is_dir():
            frame, files = _load_folder(path, progress)
        else:
            frame, files = _load_local(path, progress), [str(path)]
    else:
        frame = _load_hub(source)
    frame = _validate(frame, source)
    return Loaded(frame, files, missing_counts(frame))


def missing_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Records without a value (empty or only spaces: the loader made null and NaN "") per MISSABLE_FIELDS."""
    return {name: int(frame[name].str.strip().eq("").sum()) for name in MISSABLE_FIELDS}


def missing_note(counts: dict[str, int]) -> str:
    """E.g. "3 records have no response, 1 no instruction" (most first); "" when nothing is missing."""
    found = sorted(((n, name) for name, n in counts.items() if n), key=lambda item: -item[0])
    words = [f"{n:,} no {name}" for n, name in found]
    if words:
        n = found[0][0]
        words[0] = f"{n:,} record{' has' if n == 1 else 's have'} no {found[0][1]}"
    return ", ".join(words)


def _load_local(path: Path, progress: bool) -> pd.DataFrame:
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


def _load_folder(path: Path, progress: bool) -> tuple[pd.DataFrame, list[str]]:
    """Every data file of the folder (FOLDER_RULE), concatenated; (frame, the files' names).

    Loading some files and not others would drop records without a word; files of other columns
    would fill each other's gaps with nulls. Both are refused instead, naming the files.
    """
    files = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in LOCAL_SUFFIXES
                   and not any(part.startswith(".") for part in file.relative_to(path).parts))
    names = [file.relative_to(path).as_posix() for file in files]
    if not files:
        found = sorted(item.name for item in path.iterdir() if not item.name.startswith("."))
        listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "") if found else "nothing"
        raise DataError(f"The folder {path} holds no data files (it has {listing}). {FOLDER_RULE}. "
                        "Point --data at a folder of data files, or at one file.")
    _refuse_several_splits(path, files, names)
    frames, columns = [], None
    for file, name in zip(files, names):
        frame = _load_local(file, progress)
        if frame.empty and len(frame.columns) == 0:
            continue  # an empty file adds no records (and has no columns to compare)
        frame = _validate(frame, str(file))
        if columns is None:
            columns, first = list(frame.columns), name
        elif set(frame.columns) != set(columns):
            only_here = [c for c in frame.columns if c not in columns]
            only_first = [c for c in columns if c not in frame.columns]
            what = "; ".join(part for part in (
                f"it has {', '.join(map(str, only_here))}, which {first} has not" if only_here else "",
                f"it lacks {', '.join(map(str, only_first))}, which {first} has" if only_first else "") if part)
            raise DataError(f"{path/name} has other columns than {path/first} ({what}). {FOLDER_RULE}: make the "
                            f"columns agree, move the odd file out, or point --data at one file.")
        frames.append(frame[columns])
    if not frames:
        return pd.DataFrame(), names
    if len(frames) == 1:
        return frames[0], names
    frame = pd.concat(frames, ignore_index=True)
    for column in columns[len(REQUIRED_COLUMNS):]:
        if len({str(part[column].dtype) for part in frames}) > 1:
            # e.g. numbers in a .jsonl, text in a .csv: one column of text (nulls stay null), as Arrow needs one type
            frame[column] = frame[column].astype("str")
    return frame, names


def _refuse_several_splits(path: Path, files: list[Path], names: list[str]) -> None:
    """A folder named like a Hub dataset's splits (train.jsonl, test.jsonl) is not one dataset: training on
    all of it would train on the held-out records. `datasets` says which split a file name means."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        splits = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except Exception:  # no split naming it knows: one dataset
        return
    if len(splits) < 2:
        return
    by_file = {str(Path(f).resolve()): str(split) for split, found in splits.items() for f in found}
    groups = {}
    for file, name in zip(files, names):
        groups.setdefault(by_file.get(str(file.resolve()), "no split"), []).append(name)
    listing = "; ".join(f"{split}: {', '.join(group)}" for split, group in groups.items())
    example = groups.get("train", next(iter(groups.values())))[0]
    raise DataError(f"The folder {path} holds the splits of a dataset ({listing}). Loading them as one would mix "
                    f"held-out records in: point --data at one split's file, e.g. {path / example}.")


def _load_snapshot(path: Path) -> pd.DataFrame:
    """The train split of a Hub dataset's cached snapshot, read the way the Hub path reads the dataset."""
    import datasets

    try:
        ds = datasets.load_dataset(str(path), split="train")
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"Could not read the cached dataset in {path} ({type(err).__name__}: {first}). "
                        f"Download it again, or load it from a file: {OFFLINE_HINT}") from None
    return ds.to_pandas()


def local_folder_name(source: str) -> str:
    """The folder the offline advice downloads a Hub dataset to: ./dolly-15k for dolly-15k, as the
    README says, else the dataset's own name."""
    return "dolly-15k" if source == DEFAULT_DATA else source.split("/")[-1]


def _load_hub(source: str) -> pd.DataFrame:
    unreachable = hub_unreachable()
    if unreachable:
        cached = cached_snapshot(source, "dataset")
        if cached is None:
            raise DataError(
                f"Could not load dataset '{source}': the Hugging Face Hub is not reachable ({unreachable}) and the "
                f"dataset is not in this machine's cache. Download it once (`hf download {source} --repo-type dataset "
                f"--local-dir ./{local_folder_name(source)}`) and load it from a file: {OFFLINE_HINT}"
            )
        return _load_snapshot(Path(cached))
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
