"""The curated dataset from the command line, for a pipeline or a machine without the app (issue 16 §4):

    python -m explorer.curate DATA --output FILE [--fix citations] [--drop SIGNAL,...] [--db PATH | --no-db]
                              [--curation-column] [--tokenizer DIR [--max-length N]] [--force]

In this order: DATA is read with the project's one loader (dolly.data: a file, a folder or a Hub id); the
curation store's decisions are applied (edits applied, excluded records removed); `--fix citations` removes
citation markers (explorer.signals.remove_citations: the citations signal's own pattern); the quality
signals are computed over the result and the records flagged by each `--drop` signal are left out (for
`duplicate`, every record of a group but its first); FILE is written as JSONL, CSV or Parquet by its suffix,
in the dolly schema (`--curation-column` adds `curation`: "edited", "accepted" or ""), which
`python -m train --data FILE` takes as is. A report says the signals per category, what was fixed and what
was dropped.

Which decisions: with `--db PATH` (or a postgresql:// URL) that store's, and it must exist; without, the
app's store (DOLLY_CURATION_DB, else its default file, see dolly.curation) when it exists and holds decisions
for this very dataset, and the report says so; `--no-db` applies none. The store is only read.

Bad input (an unknown signal, an unreadable DATA, FILE being DATA or inside the DATA folder, an unknown
suffix, an existing FILE without --force, a missing --db) is a one-line error with exit status 2. DATA is
never written; FILE appears whole or not at all (written beside it under a temporary name, then renamed).
`build` is the whole transformation as a plain function, for the tests and any other caller.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dolly.curation import CurationError, RecordState, curated, dataset_key, open_store, resolve_location, shown
from dolly.data import DataError, read_dataset
from dolly.source import is_local
from explorer.signals import CITATION, SIGNALS

FIXES = ("citations",)
SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_MAX_LENGTH = 1024  # python -m train's --max-length default


@dataclass
class Curated:
    """What `build` made: the curated frame and what the report says about it."""

    frame: pd.DataFrame
    applied: dict[str, int] = field(default_factory=dict)  # decisions applied: edited / excluded / accepted
    fixed: dict[str, int] = field(default_factory=dict)  # field -> records whose text a fix changed
    markers: int = 0  # citation markers removed
    per_category: pd.DataFrame | None = None  # records flagged per signal per category (before dropping)
    dropped: dict[str, int] = field(default_factory=dict)  # signal -> records it left out
    dropped_total: int = 0


def check_signals(names) -> list[str]:
    """`names` ("empty,duplicate" or a list) as signal names, or a ValueError listing the valid ones."""
    if isinstance(names, str):
        names = [n for n in re.split(r"[,\s]+", names) if n]
    names = [n.strip().lower() for n in names]
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise ValueError(f"Unknown signal{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                         f"use one or more of {', '.join(SIGNALS)} (comma-separated).")
    return list(dict.fromkeys(names))


def build(frame: pd.DataFrame, states: dict[int, RecordState] | None = None, *, fix=(), drop=(),
          tokenizer=None, max_length: int | None = None, column: bool = False, progress=None) -> Curated:
    """`frame` (load_records' DataFrame) curated: `states` applied, `fix`es made, `drop` signals' records
    left out. `too_long` needs `tokenizer` (prepared as training does) and `max_length`."""
    from explorer.signals import compute, remove_citations

    drop = check_signals(drop)
    unknown = [f for f in fix if f not in FIXES]
    if unknown:
        raise ValueError(f"Unknown fix {', '.join(unknown)}: the fixes are {', '.join(FIXES)}.")
    if "too_long" in drop and tokenizer is None:
        raise ValueError("Dropping too_long needs the model's tokenizer: --tokenizer DIR (and --max-length N).")
    states = states or {}
    out = Curated(frame=curated(frame, states, column=column))
    applied = [s.status for s in states.values() if s.row < len(frame)]
    out.applied = {status: applied.count(status) for status in ("edited", "excluded", "accepted")}
    result = out.frame
    if "citations" in fix:
        for name in ("context", "response"):
            before = result[name]
            after = before.map(remove_citations)
            changed = before.ne(after)
            out.fixed[name] = int(changed.sum())
            out.markers += int(sum(len(CITATION.findall(text)) for text in before[changed]))
            result[name] = after
    signals = compute(result, tokenizer=tokenizer, max_length=max_length if tokenizer is not None else None,
                      progress=progress)
    flags = pd.DataFrame({name: signals.flags[name] for name in SIGNALS})
    flags.insert(0, "records", 1)
    flags.insert(0, "category", result["category"].to_numpy())
    table = flags.groupby("category", sort=True).sum()
    table.loc["(all)"] = table.sum()
    if tokenizer is None:
        table = table.drop(columns="too_long")
    out.per_category = table.astype(int)
    leave = np.zeros(len(result), bool)
    for name in drop:
        hit = signals.flags[name].copy()
        if name == "duplicate":  # keep the first record of each group
            hit &= signals.duplicate_group != np.arange(len(result))
        out.dropped[name] = int(hit.sum())
        leave |= hit
    out.dropped_total = int(leave.sum())
    out.frame = result[~leave].reset_index(drop=True)
    return out


def report(out: Curated, fix, drop) -> str:
    lines = []
    if "citations" in fix:
        lines.append(f"Fixed citations: {out.markers:,} markers removed, from {out.fixed['context']:,} contexts and "
                     f"{out.fixed['response']:,} responses.")
    lines.append("Quality signals per category (records flagged, after the decisions and fixes):")
    lines.append(out.per_category.to_string())
    if drop:
        parts = [f"{name} {n:,}" + (" (the first of each group kept)" if name == "duplicate" else "")
                 for name, n in out.dropped.items()]
        lines.append(f"Dropped {out.dropped_total:,} records (one flagged by several signals counts once): "
                     f"{', '.join(parts)}.")
    else:
        lines.append("Dropped nothing (no --drop).")
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m explorer.curate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA", help="A .jsonl/.json/.csv/.parquet file, a folder of them, or a Hub dataset id.")
    parser.add_argument("--output", "-o", required=True, metavar="FILE",
                        help=f"Where to write the curated records: {', '.join(SUFFIXES)} by its suffix.")
    parser.add_argument("--fix", action="append", default=[], choices=FIXES,
                        help="Remove citation markers ([12], [citation needed], [a]) from contexts and responses.")
    parser.add_argument("--drop", action="append", default=[], metavar="SIGNAL,...",
                        help=f"Leave out the records these signals flag: {', '.join(SIGNALS)}.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="PATH",
                       help="The curation store whose decisions to apply (a file, or a postgresql:// URL). Default: "
                            "the app's store (DOLLY_CURATION_DB, else its default file) when it holds decisions for DATA.")
    where.add_argument("--no-db", action="store_true", help="Apply no curation decisions.")
    parser.add_argument("--curation-column", action="store_true",
                        help="Add a 'curation' column: edited, accepted, or empty for untouched records.")
    parser.add_argument("--tokenizer", metavar="DIR", help="The model's tokenizer, to count tokens for too_long.")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                        help=f"too_long: records over this many tokens (default {DEFAULT_MAX_LENGTH}, as training).")
    parser.add_argument("--force", action="store_true", help="Replace FILE when it exists (never DATA).")
    args = parser.parse_args(argv)
    try:
        args.drop = check_signals(",".join(args.drop))
    except ValueError as error:
        parser.error(str(error))
    args.fix = list(dict.fromkeys(args.fix))
    args.output_path = Path(args.output).expanduser()
    suffix = args.output_path.suffix.lower()
    if suffix not in SUFFIXES:
        parser.error(f"--output {args.output}: unknown file type {suffix or '(no suffix)'!r}; "
                     f"end it with {', '.join(SUFFIXES)}.")
    args.format = SUFFIXES[suffix]
    if is_local(args.data):
        data = Path(args.data).expanduser()
        output = args.output_path.resolve()
        if data.exists() and (output == data.resolve() or (data.is_dir() and data.resolve() in output.parents)):
            parser.error(f"--output {args.output} would {'be' if output == data.resolve() else 'be inside'} the input "
                         f"{args.data}: DATA is never written. Write the curated file elsewhere.")
    if args.output_path.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name, e.g. {args.output_path / 'curated.jsonl'}.")
    if args.output_path.exists() and not args.force:
        parser.error(f"--output {args.output} exists; pass --force to replace it, or choose another name.")
    if "too_long" in args.drop and not args.tokenizer:
        parser.error("--drop too_long needs the model's tokenizer to count tokens: --tokenizer DIR (and --max-length N).")
    if args.max_length < 1:
        parser.error(f"--max-length must be a whole number from 1, got {args.max_length}.")
    args.parser = parser
    return args


def load_states(args, key: str) -> tuple[dict[int, RecordState], str]:
    """The decisions to apply and a line saying where they came from."""
    if args.no_db:
        return {}, "Curation decisions: none applied (--no-db)."
    if args.db:
        location = args.db.strip()
        if "://" not in location and not Path(location).expanduser().is_file():
            raise CurationError(f"--db {location}: no curation store there. Give the app's store file (see "
                                "--curation-db / DOLLY_CURATION_DB) or a postgresql:// URL, or leave --db out.")
    else:
        location = resolve_location(None)
        if "://" not in location and not Path(location).is_file():
            return {}, f"Curation decisions: none (no store at {location}; --db PATH to use another)."
    with open_store(location) as store:
        states = store.states(key)
    if not states and not args.db:
        return {}, f"Curation decisions: none for this dataset in {shown(location)}."
    return states, f"Curation decisions from {shown(location)}:"


def write(frame: pd.DataFrame, path: Path, file_format: str) -> None:
    """Write whole or not at all: a temporary file beside `path`, renamed over it once complete."""
    import pyarrow as pa

    from explorer.export import write_table

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write_table(pa.Table.from_pandas(frame, preserve_index=False), Path(partial), file_format)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    fail = args.parser.error  # prints usage and the message to stderr, exits 2
    try:
        loaded = read_dataset(args.data)
    except DataError as error:
        fail(str(error))
    frame = loaded.frame
    key = dataset_key(frame)
    print(f"Read {len(frame):,} records from {args.data}" + (f" ({loaded.files_note()})" if loaded.files_note() else "")
          + f"; dataset key {key}.", flush=True)
    try:
        states, said = load_states(args, key)
    except CurationError as error:
        fail(str(error))
    tokenizer = None
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer, fail)
    from tqdm.auto import tqdm

    with tqdm(total=100, desc="Quality signals", unit="%", disable=None, file=sys.stderr) as bar:
        def progress(fraction, desc=None):
            bar.update(max(0, int(fraction * 100) - bar.n))

        out = build(frame, states, fix=args.fix, drop=args.drop, tokenizer=tokenizer,
                    max_length=args.max_length if tokenizer is not None else None,
                    column=args.curation_column, progress=progress)
    if states:
        said += (f" {out.applied['edited']:,} edited, {out.applied['excluded']:,} excluded (left out), "
                 f"{out.applied['accepted']:,} accepted.")
    print(said)
    print(report(out, args.fix, args.drop))
    write(out.frame, args.output_path, args.format)
    print(f"Wrote {len(out.frame):,} records to {args.output} ({args.format}).", flush=True)
    return 0


def load_tokenizer(folder: str, fail):
    from transformers import AutoTokenizer

    from dolly.prompt import add_special_tokens

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001 - any failure: say which folder and why
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        fail(f"--tokenizer {folder}: not a tokenizer this machine can load ({first[:200]}).")
    add_special_tokens(tokenizer)
    return tokenizer


if __name__ == "__main__":
    sys.exit(main())
