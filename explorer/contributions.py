"""`python -m explorer.contributions`: the contributions of the curation store as files.

    python -m explorer.contributions export --output contributions.jsonl [--db PATH_OR_URL] [--meta] [--force]
    python -m explorer.contributions preferences --output pairs.jsonl [--db PATH_OR_URL] [--force]

`export` writes the records people wrote, answered and corrected (dolly.contributions.records: with a
response, rejected ones left out) in the dolly schema (instruction, context, response, category), so
`python -m train --data` takes the file as it is; `--meta` adds id, author, source, license, created_at and
review after the four columns. `preferences` writes the chat's corrected replies as (prompt, chosen,
rejected), the columns TRL's DPOTrainer reads. FILE is JSONL, CSV or Parquet by its suffix, written whole
or not at all; the store is --db, else --curation-db's default (DOLLY_CURATION_DB, else the app's data
folder). Bad input (an unknown suffix, an existing FILE without --force, no store at --db) is a one-line
error with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from dolly import contributions as contrib
from dolly.curation import CurationError, open_store, resolve_location, shown
from explorer.curate import SUFFIXES, write


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m explorer.contributions", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("export", "preferences"),
                        help="export: the records, in the dolly schema; preferences: (prompt, chosen, rejected) pairs.")
    parser.add_argument("--output", "-o", required=True, metavar="FILE",
                        help=f"Where to write: {', '.join(SUFFIXES)} by its suffix.")
    parser.add_argument("--db", metavar="PATH_OR_URL",
                        help="The curation store (the app's --curation-db); default: DOLLY_CURATION_DB, else the app's "
                             "data folder.")
    parser.add_argument("--meta", action="store_true", help="export: add id, author, source, license, created_at, review.")
    parser.add_argument("--force", action="store_true", help="Replace FILE when it exists.")
    args = parser.parse_args(argv)
    args.output_path = Path(args.output).expanduser()
    suffix = args.output_path.suffix.lower()
    if suffix not in SUFFIXES:
        parser.error(f"--output {args.output}: unknown file type {suffix or '(no suffix)'!r}; end it with {', '.join(SUFFIXES)}.")
    args.format = SUFFIXES[suffix]
    if args.output_path.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name, e.g. {args.output_path / 'contributions.jsonl'}.")
    if args.output_path.exists() and not args.force:
        parser.error(f"--output {args.output} exists; pass --force to replace it, or choose another name.")
    location = resolve_location(args.db)
    if "://" not in location and not Path(location).expanduser().is_file():
        parser.error(f"{'--db ' + args.db if args.db else 'The default store ' + location}: no curation store there. "
                     "Give the app's store file (--curation-db / DOLLY_CURATION_DB) or a postgresql:// URL.")
    args.location, args.parser = location, parser
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with open_store(args.location) as store:
            frame = contrib.records(store, meta=args.meta) if args.what == "export" else contrib.preference_pairs(store)
    except CurationError as error:
        args.parser.error(str(error))
    write(frame, args.output_path, args.format)
    if args.what == "export":
        per = Counter(frame["category"])
        counts = ", ".join(f"{category} {n}" for category, n in sorted(per.items()))
        print(f"{len(frame)} contributed records from {shown(args.location)} written to {args.output_path}"
              + (f" ({counts})" if counts else ""))
    else:
        print(f"{len(frame)} preference pairs from {shown(args.location)} written to {args.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
