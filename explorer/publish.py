"""`python -m explorer.publish REPO_ID`: the contributions (or a curated export) as a dataset repo on the Hub.

    python -m explorer.publish you/our-dolly [--private] [--db PATH_OR_URL] [--license cc-by-4.0]
    python -m explorer.publish you/dolly-curated --data curated.jsonl [--private]

Without --data: the contributions of the curation store (dolly.contributions.records: records with a
response, rejected ones left out), under the license their writers chose (one license per repo: with
records under several, --license picks those to publish). With --data FILE: that file (e.g. what
`python -m explorer.curate` wrote), a derivative of --parent (default databricks/databricks-dolly-15k).
A set holding dolly-15k text is CC BY-SA 3.0, as dolly-15k is (share-alike). Uploaded as data/train.jsonl
in the dolly schema with a dataset card: license, records per category, how they were collected, the
parent dataset. The token comes from HF_TOKEN or the login cache and is never printed; a bad repo id or
no token is refused (exit status 2) before anything is read or uploaded.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

DOLLY = "databricks/databricks-dolly-15k"
DOLLY_LICENSE = "cc-by-sa-3.0"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m explorer.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("repo_id", metavar="REPO_ID", help="The dataset repo to create or update: owner/name.")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--db", metavar="PATH_OR_URL", help="The curation store holding the contributions (the app's "
                                                           "--curation-db); default: DOLLY_CURATION_DB, else the app's.")
    parser.add_argument("--data", metavar="FILE", help="Publish this dolly-schema file instead of the contributions.")
    parser.add_argument("--parent", default=None, metavar="HUB_ID",
                        help=f"The dataset the records come from (default with --data: {DOLLY}; none for contributions).")
    parser.add_argument("--license", default=None, help="Contributions: publish the records under this license.")
    args = parser.parse_args(argv)
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.repo_id)
        if args.repo_id.count("/") != 1:
            raise HFValidationError("it has no owner")
    except HFValidationError as error:
        parser.error(f"{args.repo_id!r} is not a Hub repo id ({error}); give owner/name, e.g. you/our-dolly.")
    if not get_token():
        parser.error("No Hugging Face token: set HF_TOKEN (a token with write access) or run `hf auth login`. "
                     "Nothing was uploaded.")
    if args.data and not Path(args.data).expanduser().is_file():
        parser.error(f"--data {args.data}: no such file.")
    args.parser = parser
    return args


def collect(args):
    """(frame, license, parent, how collected) of what is published."""
    from dolly import contributions as contrib
    from dolly.curation import open_store, resolve_location
    from dolly.data import load_records

    if args.data:
        frame = load_records(str(Path(args.data).expanduser()), progress=False)[["instruction", "context", "response", "category"]]
        parent = args.parent or DOLLY
        how = (f"Records of [{parent}](https://huggingface.co/datasets/{parent}), curated with open Dolly (the Explorer's "
               "edit / exclude / accept decisions and `python -m explorer.curate`).")
        return frame, DOLLY_LICENSE if parent == DOLLY else (args.license or DOLLY_LICENSE), parent, how
    location = resolve_location(args.db)
    if "://" not in location and not Path(location).expanduser().is_file():
        args.parser.error(f"No curation store at {location}: give the app's store with --db (or publish a file with --data).")
    with open_store(location) as store:
        frame = contrib.records(store, meta=True)
    licenses = Counter(frame["license"])
    if args.license:
        frame = frame[frame["license"] == args.license.lower()]
    elif len(licenses) > 1:
        args.parser.error("The contributions carry several licenses (" + ", ".join(f"{k}: {n}" for k, n in licenses.items())
                          + "); publish one at a time with --license.")
    if not len(frame):
        args.parser.error("No contributed records to publish (records need a response; rejected ones are left out).")
    license = args.license.lower() if args.license else next(iter(licenses))
    sources = Counter(frame["source"])
    how = ("Written by people with open Dolly's Contribute tab, following dolly-15k's guidelines per category: "
           + ", ".join(f"{n} {what}" for what, n in (("written", sources.get("written", 0)),
                                                     ("answers to others' questions", sources.get("answer", 0)),
                                                     ("corrected model answers", sources.get("correction", 0))) if n)
           + ". Each record passed the checks (fields, lengths, category) and the quality warnings; reviewers "
             "accepted or rejected them in the app.")
    if args.parent:
        license = DOLLY_LICENSE if args.parent == DOLLY else license
    return frame[["instruction", "context", "response", "category"]], license, args.parent, how


def card(repo_id: str, frame, license: str, parent: str | None, how: str) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    n = len(frame)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    data = DatasetCardData(license=license, language=["en"], task_categories=["text-generation"],
                           size_categories=[size], source_datasets=[parent] if parent else None,
                           pretty_name=repo_id.split("/")[-1], tags=["dolly", "open-dolly", "instruction-tuning"])
    rows = "\n".join(f"| {c} | {k:,} |" for c, k in sorted(Counter(frame["category"]).items()))
    parent_text = f"[{parent}](https://huggingface.co/datasets/{parent})" if parent else "none (new records)"
    body = f"""
# {repo_id.split('/')[-1]}

Instruction-following records in the schema of databricks-dolly-15k (instruction, context, response,
category), published with open Dolly (`python -m explorer.publish`). Train on them with
`python -m train --data {repo_id}`.

- **Records:** {n:,}
- **License:** {license}{' (dolly-15k is CC BY-SA 3.0; derivatives share it)' if license == DOLLY_LICENSE and parent == DOLLY else ''}
- **Parent dataset:** {parent_text}

## How it was collected

{how}

## Records per category

| category | records |
|---|---|
{rows}
"""
    return str(DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body))


def main(argv=None) -> int:
    args = parse_args(argv)
    frame, license, parent, how = collect(args)
    from huggingface_hub import HfApi, get_token

    from explorer.curate import write

    token = get_token()
    with tempfile.TemporaryDirectory(prefix="dolly-publish-") as folder:
        write(frame, Path(folder) / "data" / "train.jsonl", "jsonl")
        (Path(folder) / "README.md").write_text(card(args.repo_id, frame, license, parent, how), encoding="utf-8")
        api = HfApi(token=token)
        try:
            url = api.create_repo(args.repo_id, repo_type="dataset", private=args.private, exist_ok=True)
            api.upload_folder(repo_id=args.repo_id, folder_path=folder, repo_type="dataset",
                              commit_message="Upload records collected with open Dolly (python -m explorer.publish)")
        except Exception as error:  # noqa: BLE001 - said in one line, the token never in it
            text = (str(error).splitlines() or [type(error).__name__])[0]
            status = getattr(getattr(error, "response", None), "status_code", None)
            why = (f"the Hub refused the token (HTTP {status}): it needs write access to {args.repo_id}"
                   if status in (401, 403) else f"{type(error).__name__}: {text.replace(token, '***')}")
            print(f"Could not publish to {args.repo_id}: {why}.", file=sys.stderr)
            return 1
    per = ", ".join(f"{c} {k}" for c, k in sorted(Counter(frame["category"]).items()))
    print(f"Published {len(frame):,} records ({per}) under {license} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
