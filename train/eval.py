"""`python -m train.eval`: is the Dolly you trained any good? Dolly's own benchmark table (seven
lm-evaluation-harness tasks, zero-shot, as on the dolly-v2 model card) and the `dolly` task (answers
to held-out dolly-15k instructions scored per category against the human ones).

    python -m train.eval --model ./dolly-410m                         # the seven tasks, from the Hub
    python -m train.eval --model ./dolly-410m --task-data ./task-data  # offline: DIR/<task>.jsonl
    python -m train.eval --model ./dolly-410m --tasks dolly,boolq --limit 200

Writes the results JSON (default <model dir>/eval_results.json), prints the model among the card's
rows, and puts the results into the model folder's card (README.md): Hub `model-index` metadata plus
a table, everything else kept. `python -m train --eval-tasks LIST` runs the same at the end of training.
"""
import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from dolly.data import OFFLINE_HINT, DataError
from dolly.source import hub_id, hub_offline, is_local
from train.cli import RUN_ARGS_FILE, TrainError
from train.eval_tasks import DOLLY_TASKS, HARNESS_TASKS, check_task_file, gmean, task_file

KNOWN_TASKS = DOLLY_TASKS + ("dolly",)
CARD = "README.md"
RESULTS_FILE = "eval_results.json"
# What an evaluation writes into a model folder (python -m train claims them as the run's files).
EVAL_FILES = (RESULTS_FILE, Path(RESULTS_FILE).stem + "_dolly.jsonl")
CPU_BATCH_SIZE = 8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.eval",
        description="Evaluate a Dolly (or any causal LM) on the dolly-v2 model card's lm-evaluation-harness tasks "
                    "and on held-out dolly-15k answers per category; write the results JSON and the model card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hub model id or local model folder (what `python -m train` writes).")
    p.add_argument("--tasks", default=",".join(DOLLY_TASKS),
                   help=f"Comma-separated tasks: any of {', '.join(KNOWN_TASKS)}. The default is the dolly-v2 card's seven.")
    p.add_argument("--task-data", default=None, metavar="DIR",
                   help="Offline twin: DIR/<task>.jsonl (or .parquet) holds the split each lm-eval task evaluates, in "
                        "its Hub dataset's schema. Without it, lm-eval loads the data from the Hub.")
    p.add_argument("--limit", type=int, default=None,
                   help="Evaluate only the first N documents of each task (quick runs; the card is then not updated).")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="Results JSON (default: <model dir>/eval_results.json for a local model, else "
                        "./eval_results_<owner>_<name>.json). The dolly task's generations go beside it.")
    p.add_argument("--data", default=None,
                   help="dolly task records: a dolly-15k-shaped file or Hub id, all of its records; when it is the "
                        "model's training data, only the split `python -m train` held out (the default, recomputed "
                        "from the model folder's run_args.json).")
    p.add_argument("--max-new-tokens", type=int, default=256, help="dolly task: answer length limit (greedy).")
    p.add_argument("--batch-size", default="auto",
                   help="lm-eval batch size: a number, or auto (lm-eval's search on a GPU; "
                        f"{CPU_BATCH_SIZE} on a CPU, where the search's batch-64 probes cost minutes and GBs).")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="Also upload the updated model card to this Hub model repo (token from HF_TOKEN or "
                        "`hf auth login`).")
    return p


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    unknown = [t for t in names if t not in KNOWN_TASKS]
    if unknown or not names:
        what = f"Unknown task{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}" if unknown else "No task given"
        raise TrainError(f"{what}. Known tasks: {', '.join(KNOWN_TASKS)} (comma-separated, e.g. --tasks arc_easy,dolly).")
    return list(dict.fromkeys(names))


def check_task_data(tasks, task_data) -> Path | None:
    """The --task-data folder, with a file in the right schema for every lm-eval task asked for."""
    harness = [t for t in tasks if t in HARNESS_TASKS]
    if task_data is None:
        return None
    folder = Path(task_data).expanduser()
    if not folder.is_dir():
        raise TrainError(f"--task-data {task_data} is not a folder. Give a folder holding <task>.jsonl files.")
    for name in harness:
        check_task_file(task_file(folder, name), name)
    return folder


def check_inputs(args) -> dict:
    """Every check that needs no model weights, cheapest first. Returns the resolved plan."""
    if args.limit is not None and args.limit < 1:
        raise TrainError(f"--limit must be at least 1 document per task (got {args.limit}); leave it out to evaluate all.")
    if args.max_new_tokens < 1:
        raise TrainError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens}).")
    batch = str(args.batch_size).strip().lower()
    if batch != "auto" and not (batch.isdigit() and int(batch) >= 1):
        raise TrainError(f"--batch-size must be a positive number or auto (got {args.batch_size}).")
    tasks = parse_tasks(args.tasks)
    task_data = check_task_data(tasks, args.task_data)
    local = is_local(args.model)
    model_dir = Path(args.model).expanduser() if local else None
    if local:
        if not model_dir.is_dir():
            raise TrainError(f"Model folder not found: {args.model}. Give a Hub id (databricks/dolly-v2-3b) or the "
                             "folder `python -m train` wrote.")
        if not (model_dir / "config.json").exists():
            raise TrainError(f"{args.model} has no config.json, so it is not a saved model. Point --model at the folder "
                             "`save_pretrained` (or `python -m train`) wrote.")
    if args.output:
        output = Path(args.output).expanduser()
        if output.is_dir():
            raise TrainError(f"--output {args.output} is a folder; give a file name, e.g. {output / 'eval_results.json'}.")
        if not output.parent.is_dir():
            raise TrainError(f"--output {args.output}: the folder {output.parent} does not exist.")
    elif local:
        output = model_dir / RESULTS_FILE
    else:
        output = Path(f"eval_results_{args.model.replace('/', '_')}.json")
    if "dolly" in tasks and not args.data and not (model_dir is not None and (model_dir / RUN_ARGS_FILE).is_file()):
        raise TrainError(f"The dolly task needs records: {args.model} has no {RUN_ARGS_FILE} (written by `python -m "
                         "train`) to recover its held-out split, so give --data FILE (a dolly-15k-shaped "
                         ".jsonl/.csv/.parquet, or a Hub id) and maybe --limit N.")
    if args.push_to_hub and not hub_id(args.push_to_hub):
        raise TrainError(f"--push-to-hub takes a Hub repo id like you/dolly-v2-3b (got {args.push_to_hub}).")
    if args.push_to_hub and local and not (model_dir / CARD).is_file():
        raise TrainError(f"--push-to-hub updates the model card, but {model_dir} has no {CARD}. Train the model with "
                         "`python -m train` (which writes one), or push the model first.")
    if args.push_to_hub and args.limit:
        raise TrainError("--push-to-hub with --limit would publish numbers from part of each task; drop one of them.")
    return {"tasks": tasks, "task_data": task_data, "model_dir": model_dir, "output": output}


def pick_device_dtype():
    """bf16 on a GPU (fp16 where the GPU has no bf16), fp32 on the CPU: Dolly's own precision."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_model(name: str, device: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(device)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if is_local(name):
            raise TrainError(f"Could not load the model in {name} ({type(err).__name__}: {first}).") from None
        reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else f"{type(err).__name__}: {first}"
        raise TrainError(f"Could not load model '{name}' from the Hugging Face Hub ({reason}). Check the id, or use a "
                         "local folder: --model ./path/to/model.") from None
    model.eval()
    return model, tokenizer


def dolly_records(args, plan, tokenizer):
    """(records, where they came from, data source) for the dolly task; see train/eval_dolly.py."""
    from dolly.data import load_records
    from train.eval_dolly import held_out_records

    model_dir = plan["model_dir"]
    # The training data again (or no --data): only its held-out split, never records the model learned.
    held = held_out_records(model_dir, tokenizer, args.data) if model_dir is not None else None
    if held is not None:
        frame, data = held
        source = f"the split `python -m train` held out of {data}"
    elif args.data:
        frame, data = load_records(args.data), args.data
        source = f"records of {data}"
    else:  # check_inputs rules this out; kept so the function stands on its own
        raise TrainError(f"The dolly task needs records: give --data FILE (no {RUN_ARGS_FILE} in {args.model}).")
    if args.limit:
        frame = frame.head(args.limit)
        source += f" (first {len(frame)})"
    if frame.empty:
        raise TrainError(f"The dolly task has no records: {data} is empty.")
    return frame, source, data


def evaluate(args, plan, *, held_out=None) -> dict:
    """Load the model once, run the lm-eval tasks and the dolly task, write the JSON (and generations),
    update the card. `held_out`: (records, source, data) when the caller (training) already has them."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from train.eval_tasks import run_harness

    tasks, output = plan["tasks"], plan["output"]
    device, dtype = pick_device_dtype()
    model, tokenizer = load_model(args.model, device, dtype)
    results = {"model": hub_id(args.model) or Path(args.model).name, "model_path": str(args.model), "tasks": {},
               "gmean": None, "limit": args.limit, "task_data": str(plan["task_data"]) if plan["task_data"] else None,
               "device": device, "dtype": str(dtype).replace("torch.", ""), "lm_eval_version": lm_eval.__version__,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    generations = None
    if "dolly" in tasks:
        from train.eval_dolly import run_dolly

        frame, source, data = held_out if held_out is not None else dolly_records(args, plan, tokenizer)
        if held_out is not None and args.limit:
            frame = frame.head(args.limit)
        print(f"dolly task: {len(frame):,} records, {source}.", flush=True)
        results["tasks"]["dolly"], generations = run_dolly(model, tokenizer, frame, max_new_tokens=args.max_new_tokens)
        results.update(dolly_source=source, dolly_data=data)

    harness = [t for t in tasks if t in HARNESS_TASKS]
    if harness:
        batch = str(args.batch_size).strip().lower()
        batch = (batch if device == "cuda" else CPU_BATCH_SIZE) if batch == "auto" else int(batch)
        results["batch_size"] = batch
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, max_batch_size=64)
        with tempfile.TemporaryDirectory(prefix="open-dolly-tasks-") as workdir:
            scores = run_harness(lm, harness, task_data=plan["task_data"], limit=args.limit, workdir=Path(workdir))
        # Card column order, whatever order --tasks gave.
        results["tasks"] = {**{t: scores[t] for t in DOLLY_TASKS if t in scores}, **results["tasks"]}
        results["gmean"] = gmean(r["score"] for r in scores.values())

    if generations is not None:
        path = generations_path(output)
        atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in generations))
        results["tasks"]["dolly"]["generations"] = str(path)
    atomic_write(output, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    results["output"] = str(output)
    report(results)
    print(f"[eval] results: {output}", flush=True)
    update_card(args, plan, results)
    return results


def generations_path(output: Path) -> Path:
    return output.with_name(output.stem + "_dolly.jsonl")


def report(results: dict) -> None:
    from train.card import EVAL_END, EVAL_START, eval_section

    text = eval_section(results).replace(EVAL_START, "").replace(EVAL_END, "").strip()
    if results.get("limit"):
        text += f"\n\n(--limit {results['limit']}: first documents of each task only; not comparable with the card's numbers.)"
    print("\n" + text + "\n", flush=True)


def update_card(args, plan, results: dict) -> None:
    """Into the local card (and the Hub's with --push-to-hub); never with --limit (partial numbers)."""
    from train.card import add_eval_results
    from train.hub import push_card

    if args.limit:
        print("[eval] --limit: the model card was not updated (partial results).", flush=True)
        return
    model_dir = plan["model_dir"]
    if model_dir is not None:
        card_path = model_dir / CARD
        if not card_path.is_file():
            print(f"[eval] {model_dir} has no model card ({CARD}): no card was updated; the results are in "
                  f"{results['output']}.", flush=True)
            return
        card = add_eval_results(card_path.read_text(encoding="utf-8"), results, model_name=results["model"])
        atomic_write(card_path, str(card))
        print(f"[eval] model card updated: {card_path}", flush=True)
    elif args.push_to_hub:
        from huggingface_hub import ModelCard

        try:
            text = ModelCard.load(args.model).content
        except Exception as err:
            raise TrainError(f"Could not read the model card of {args.model} from the Hub ({type(err).__name__}) to "
                             f"update it; the results are in {results['output']}.") from None
        card = add_eval_results(text, results, model_name=results["model"])
    else:
        print(f"[eval] {args.model} is a Hub model: no local card to update (--push-to-hub REPO_ID updates the Hub's).",
              flush=True)
        return
    if args.push_to_hub:
        print(f"[eval] card pushed: {push_card(card, args.push_to_hub)}", flush=True)


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: a crash leaves the old file or the new
    one, never half of one."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a card or results file is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_training_eval(args) -> None:
    """`python -m train --eval-tasks`: the same checks as `python -m train.eval`, before training starts."""
    tasks = parse_tasks(args.eval_tasks)
    check_task_data(tasks, args.eval_task_data)
    if "dolly" in tasks and not args.test_size:
        raise TrainError("--eval-tasks dolly scores the held-out records, but --test-size 0 holds none out. "
                         "Give --test-size (e.g. 200) or drop dolly from --eval-tasks.")


def evaluate_after_training(args, frame, eval_rows) -> dict:
    """Evaluate the saved model in args.output_dir; the dolly task gets the records training held out."""
    eval_args = build_parser().parse_args(["--model", str(args.output_dir), "--tasks", args.eval_tasks,
                                           "--max-new-tokens", str(args.max_new_tokens)]
                                          + (["--task-data", str(args.eval_task_data)] if args.eval_task_data else []))
    plan = check_inputs(eval_args)
    held_out = (frame.iloc[[r["record"] for r in eval_rows]].reset_index(drop=True),
                f"the split `python -m train` held out of {args.data}", args.data)
    return evaluate(eval_args, plan, held_out=held_out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = check_inputs(args)
        evaluate(args, plan)
    except (TrainError, DataError) as err:
        message = str(err).replace(OFFLINE_HINT, "python -m train.eval --data path/to/databricks-dolly-15k.jsonl")
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
