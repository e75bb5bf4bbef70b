"""Command line of `python -m train`, and every check that can fail before training starts.

Checks run cheapest first (flags, files, output dir, data, then the base model's config), so a
typo costs seconds, not a model download. Each failure is a TrainError whose message says what was
wrong and how to fix it; `train.train.main` prints it without a traceback.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

from dolly.data import DEFAULT_DATA
from dolly.source import hub_offline, is_local

DEFAULT_BASE_MODEL = "EleutherAI/pythia-12b"  # Dolly 2.0's base
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUN_ARGS_FILE = "run_args.json"
# The manifest: every top-level name a run wrote (or is about to write) in --output-dir. Only these are
# ever deleted (--overwrite) or written over; anything else there is the user's, and the run refuses.
MANIFEST_FILE = "run_files.json"
MANIFEST_TMP = MANIFEST_FILE + ".tmp"  # written, then renamed over the manifest: a kill never leaves half of one
# What a run writes before it has anything worth keeping; a folder holding only these (and checkpoints a
# kill cut short) is a run that stopped early, and the same command may start again there.
BOOKKEEPING = {RUN_ARGS_FILE, MANIFEST_FILE, MANIFEST_TMP, "runs"}
CHECKPOINT = re.compile(r"checkpoint-\d+")
REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "pip install -r requirements-train.txt"
# Flags that decide the data order and the model; a --resume with other values would not continue
# the same run, so it is refused.
RESUME_MUST_MATCH = (
    "base_model", "data", "categories", "seed", "test_size", "max_length",
    "per_device_batch_size", "gradient_accumulation_steps", "lora_r",
)
OFFLINE_MODEL_HINT = "--base-model ./path/to/pythia-2.8b (a folder holding config.json, the weights and the tokenizer)"


class TrainError(Exception):
    """A problem with the run's inputs, worded for the person who typed the command."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Fine-tune an EleutherAI Pythia model on databricks-dolly-15k (or any file of the same "
                    "schema) into a Dolly, with transformers + DeepSpeed, and optionally push it to the Hub. "
                    "Runs as one process, or under `deepspeed`, `torchrun` or `accelerate launch`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    what = p.add_argument_group("what to train")
    what.add_argument("--base-model", default=DEFAULT_BASE_MODEL,
                      help="Hub model id or local folder of a GPT-NeoX/Pythia causal LM (70m ... 12b).")
    what.add_argument("--data", default=[DEFAULT_DATA], nargs="+", metavar="DATA",
                      help="Hub dataset id, or a local .jsonl/.json/.csv/.parquet file (or a folder of them: all "
                           "are read) with the columns instruction, context, response, category (what the "
                           "Explorer and python -m explorer.contributions export). Several mix them, e.g. "
                           "--data databricks/databricks-dolly-15k contributions.jsonl (counted per source).")
    what.add_argument("--categories", nargs="+", default=None, metavar="CATEGORY",
                      help="Train on these categories only (space- or comma-separated); all when not given.")
    what.add_argument("--output-dir", default="dolly-out",
                      help="Where checkpoints, TensorBoard logs, the final model, tokenizer and model card go.")
    what.add_argument("--overwrite", action="store_true",
                      help="Delete a previous run in --output-dir and start afresh.")
    what.add_argument("--resume", action="store_true",
                      help="Continue the run in --output-dir from its last checkpoint (after a crash or kill).")

    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=float, default=2.0, help="Passes over the training split.")
    recipe.add_argument("--max-steps", type=int, default=-1,
                        help="Stop after this many optimizer steps (overrides --epochs when > 0).")
    recipe.add_argument("--lr", type=float, default=5e-6, help="Peak learning rate (linear decay after warm-up).")
    recipe.add_argument("--warmup-steps", type=int, default=50, help="Linear warm-up steps.")
    recipe.add_argument("--per-device-batch-size", type=int, default=8, help="Examples per device per micro-batch.")
    recipe.add_argument("--gradient-accumulation-steps", type=int, default=None,
                        help="Micro-batches per optimizer step (default 1, or derived from --global-batch-size).")
    recipe.add_argument("--global-batch-size", type=int, default=None,
                        help="Examples per optimizer step over all devices; must be a multiple of "
                             "per-device batch size x number of processes.")
    recipe.add_argument("--max-length", type=int, default=1024,
                        help="Longest tokenized record, in tokens; longer records are dropped (and counted), "
                             "never cut. At most the model's context window.")
    recipe.add_argument("--test-size", type=float, default=1000,
                        help="Held-out eval records: a count (>= 1) or a fraction (< 1); 0 = no eval.")
    recipe.add_argument("--seed", type=int, default=42, help="Seeds the split, the data order and the init.")
    recipe.add_argument("--bf16", action="store_true", help="bf16 mixed precision (A100/H100; CPU too).")
    recipe.add_argument("--fp16", action="store_true", help="fp16 mixed precision (V100 and older).")
    recipe.add_argument("--gradient-checkpointing", action="store_true",
                        help="Recompute activations in the backward pass: much less memory, ~30%% slower.")
    recipe.add_argument("--deepspeed", default=None, metavar="CONFIG",
                        help=f"DeepSpeed JSON config, e.g. {CONFIG_DIR.name}/ds_z3_bf16.json (A100/H100), "
                             "ds_z3_offload.json (24 GB cards), ds_z3_fp16.json (V100); "
                             "a bare file name is looked up in train/configs/.")
    recipe.add_argument("--lora-r", type=int, default=0,
                        help="LoRA rank through peft; 0 = full fine-tune.")
    recipe.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha (default 2 x rank).")
    recipe.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout.")
    recipe.add_argument("--no-merge", action="store_true",
                        help="With --lora-r: save only the adapter instead of a merged, standalone model.")

    run = p.add_argument_group("checkpoints, logs, output")
    run.add_argument("--save-steps", type=int, default=200, help="Write a checkpoint every N optimizer steps.")
    run.add_argument("--save-total-limit", type=int, default=2, help="Checkpoints kept (oldest deleted first).")
    run.add_argument("--eval-steps", type=int, default=None,
                     help="Evaluate every N steps (default: at each checkpoint); the final eval always runs.")
    run.add_argument("--logging-steps", type=int, default=10, help="Log the training loss every N steps.")
    run.add_argument("--samples-per-category", type=int, default=2,
                     help="Sample generations printed per category at the end (0 = none).")
    run.add_argument("--max-new-tokens", type=int, default=128,
                     help="Length limit of those sample generations (and of the dolly task's answers, --eval-tasks).")
    run.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                     help="Upload the output folder to this Hub model repo (token from HF_TOKEN or "
                          "`hf auth login`).")
    run.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    run.add_argument("--eval-tasks", default=None, metavar="LIST",
                     help="At the end, evaluate the saved model as `python -m train.eval --tasks LIST` does (the "
                          "dolly-v2 card's lm-eval tasks and/or dolly, on the held-out split) and put the results "
                          "into the model card before any push.")
    run.add_argument("--eval-task-data", default=None, metavar="DIR",
                     help="With --eval-tasks: local files of the lm-eval tasks (as `python -m train.eval --task-data`).")
    # The `deepspeed` launcher appends --local_rank=N; torchrun/accelerate use the LOCAL_RANK variable.
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    # One source stays a string (as run_args.json and the card have always had it); several are a list.
    args.data = args.data[0] if len(args.data) == 1 else list(args.data)
    if args.categories:
        args.categories = sorted({c.strip() for item in args.categories for c in item.split(",") if c.strip()})
    return args


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_flags(args) -> None:
    """Checks that need nothing but the flags and small files; mutates args to their resolved values."""
    positive = {"--per-device-batch-size": args.per_device_batch_size, "--max-length": args.max_length,
                "--save-steps": args.save_steps, "--logging-steps": args.logging_steps}
    for flag, value in positive.items():
        if value < 1:
            raise TrainError(f"{flag} must be at least 1 (got {value}).")
    if args.lr <= 0:
        raise TrainError(f"--lr must be positive (got {args.lr}).")
    if args.max_steps <= 0 and args.epochs <= 0:
        raise TrainError("Nothing to train: give --epochs > 0 or --max-steps > 0.")
    if args.test_size < 0 or (args.test_size >= 1 and args.test_size != int(args.test_size)):
        raise TrainError(f"--test-size must be a record count (1, 2, ...) or a fraction below 1 (got {args.test_size}).")
    if args.lora_r < 0:
        raise TrainError(f"--lora-r must be 0 (full fine-tune) or a positive rank (got {args.lora_r}).")
    if args.no_merge and not args.lora_r:
        raise TrainError("--no-merge only applies to LoRA runs; add --lora-r 16 (say) or drop --no-merge.")
    if args.bf16 and args.fp16:
        raise TrainError("Pick one of --bf16 (A100/H100) and --fp16 (V100), not both.")
    if args.resume and args.overwrite:
        raise TrainError("--resume continues the run in --output-dir and --overwrite deletes it: pick one.")
    _resolve_batch_sizes(args)
    _check_packages(args)
    if args.deepspeed:
        args.deepspeed = str(_check_deepspeed_config(args))
    if args.push_to_hub:
        from train.hub import check_push  # train.hub imports this module

        check_push(args.push_to_hub)


def _check_packages(args) -> None:
    """The packages of requirements-train.txt that the app's requirements.txt lacks, for the flags that
    need them: missing, they would stop the run with a traceback after the model loaded."""
    needed = {"tensorboard": "the TensorBoard logs every run writes"}
    if args.deepspeed:
        needed["deepspeed"] = "--deepspeed"
    if args.lora_r:
        needed["peft"] = "--lora-r"
    missing = [f"{name} (for {why})" for name, why in needed.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise TrainError(f"Training needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                         f"installed. Install training's requirements: {INSTALL_HINT}")


def _resolve_batch_sizes(args) -> None:
    per_step = args.per_device_batch_size * world_size()
    if args.global_batch_size is not None:
        if args.global_batch_size < 1 or args.global_batch_size % per_step:
            raise TrainError(
                f"--global-batch-size {args.global_batch_size} is not a multiple of per-device batch size "
                f"{args.per_device_batch_size} x {world_size()} process(es) = {per_step}. "
                f"Use e.g. --global-batch-size {per_step * max(1, round(args.global_batch_size / per_step))}."
            )
        derived = args.global_batch_size // per_step
        if args.gradient_accumulation_steps not in (None, derived):
            raise TrainError(
                f"--global-batch-size {args.global_batch_size} needs --gradient-accumulation-steps {derived} with "
                f"per-device batch size {args.per_device_batch_size} on {world_size()} process(es), "
                f"not {args.gradient_accumulation_steps}. Give only one of the two."
            )
        args.gradient_accumulation_steps = derived
    if args.gradient_accumulation_steps is None:
        args.gradient_accumulation_steps = 1
    if args.gradient_accumulation_steps < 1:
        raise TrainError(f"--gradient-accumulation-steps must be at least 1 (got {args.gradient_accumulation_steps}).")
    args.global_batch_size = per_step * args.gradient_accumulation_steps


def _check_deepspeed_config(args) -> Path:
    path = Path(args.deepspeed).expanduser()
    if not path.exists() and not path.parent.name and (CONFIG_DIR / path.name).exists():
        path = CONFIG_DIR / path.name
    if path.is_dir():
        raise TrainError(f"--deepspeed {args.deepspeed} is a folder; give the config's JSON file, e.g. ds_z3_bf16.json.")
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.json")))
        raise TrainError(f"DeepSpeed config not found: {args.deepspeed}. Shipped configs (train/configs/): {shipped}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainError(f"DeepSpeed config {path} is not valid JSON: {err}.") from None
    except OSError as err:
        raise TrainError(f"Cannot read the DeepSpeed config {path}: {err.strerror or err}.") from None
    if not isinstance(config, dict):
        raise TrainError(f"DeepSpeed config {path} must be a JSON object, like the ones in train/configs/.")
    # Explicit (non-"auto") batch fields must agree with the flags, or DeepSpeed stops with a
    # less readable assertion after the model is loaded.
    expected = {
        "train_micro_batch_size_per_gpu": args.per_device_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "train_batch_size": args.global_batch_size,
    }
    for key, value in expected.items():
        if key in config and config[key] != "auto" and config[key] != value:
            raise TrainError(
                f"{path}: {key} = {config[key]} but the flags give {value} "
                f"(per-device {args.per_device_batch_size} x accumulation {args.gradient_accumulation_steps} x "
                f"{world_size()} process(es)). Set it to \"auto\" or change the flags."
            )
    zero = config.get("zero_optimization", {})
    if zero.get("stage") == 3 and not (
        zero.get("stage3_gather_16bit_weights_on_model_save") or zero.get("gather_16bit_weights_on_model_save")
    ):
        raise TrainError(
            f"{path}: ZeRO-3 without \"stage3_gather_16bit_weights_on_model_save\": true would save an empty "
            "model. Add it under zero_optimization."
        )
    return path.resolve()


def check_output_dir(args) -> str | None:
    """Refuse an --output-dir the run could damage, or one holding another run it was not told to
    continue or replace; returns the checkpoint to resume from, if any. Deletes nothing
    (prepare_output_dir does, once the inputs have all been checked)."""
    args.output_dir = str(Path(args.output_dir).expanduser())
    out = Path(args.output_dir)
    _refuse_shared_folder(out, args)
    from train.disk import check_writable  # train.disk imports this module

    check_writable(out)  # a file in the path, a read-only disk: said now, not after the model loaded
    owned, foreign = _contents(out)
    if foreign:
        raise TrainError(_foreign_files_message(out, foreign))
    if not _worth_keeping(owned) or args.overwrite:
        return None  # new, empty, a run that stopped before its first checkpoint, or one to replace
    if not args.resume:
        raise TrainError(
            f"--output-dir {out} already holds a run. Add --resume to continue it, --overwrite to delete it and "
            "start afresh, or pick another --output-dir."
        )
    previous = _previous_args(out)
    if previous is not None:
        changed = [k for k in RESUME_MUST_MATCH if k in previous and previous[k] != _jsonable(getattr(args, k))]
        if changed:
            details = "; ".join(f"--{k.replace('_', '-')} was {previous[k]!r}, now {getattr(args, k)!r}" for k in changed)
            raise TrainError(f"--resume would not continue the run in {out}: {details}. Use the same flags, "
                             "or another --output-dir.")
    checkpoint = last_checkpoint(out)
    if checkpoint is None:
        # Starting over would write over the finished model with nothing to show for it.
        raise TrainError(f"--resume: the run in {out} has no checkpoint left to continue from. Use --overwrite "
                         "to delete it and start afresh, or pick another --output-dir.")
    return checkpoint


def _refuse_shared_folder(out: Path, args) -> None:
    """Folders that hold more than a run ever could: writing a run there, let alone --overwrite, risks
    the user's own files whatever the manifest says."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    why = None
    if target == Path.home().resolve():
        why = "your home folder"
    elif target == cwd:
        why = "the current folder"
    elif target in cwd.parents:
        why = "a folder that holds the current folder"
    elif target == REPO_ROOT or target in REPO_ROOT.parents:
        why = "open Dolly's own folder" if target == REPO_ROOT else "a folder that holds open Dolly's code"
    else:
        datas = args.data if isinstance(args.data, list) else [args.data]
        for flag, value in [("--data", d) for d in datas] + [("--base-model", args.base_model)]:
            source = Path(value).expanduser()
            if is_local(value) and (source.resolve() == target or target in source.resolve().parents):
                why = f"where {flag} {value} is"
                break
    if why:
        raise TrainError(f"--output-dir {args.output_dir} is {why}; a run writes its files there and --overwrite "
                         "deletes them. Give the run a folder of its own, e.g. --output-dir dolly-out.")


def _manifest(out: Path) -> set:
    """The names the manifest marks as a run's (empty when the folder holds no run of ours)."""
    try:
        files = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {MANIFEST_TMP}  # a kill during the very first manifest write leaves only this
    return {MANIFEST_FILE, MANIFEST_TMP, *(name for name in files if isinstance(name, str))}


def _contents(out: Path) -> tuple[list, list]:
    """--output-dir's top-level entries: (those a run of ours wrote, everything else)."""
    if not out.is_dir():
        return [], []
    names = _manifest(out)
    entries = sorted(out.iterdir())
    return [e for e in entries if e.name in names], [e for e in entries if e.name not in names]


def _worth_keeping(owned: list) -> bool:
    """Whether a run of ours got anywhere: a complete checkpoint or a saved model, not just bookkeeping."""
    return any(not (e.name in BOOKKEEPING or (CHECKPOINT.fullmatch(e.name) and not (e / "trainer_state.json").exists()))
               for e in owned)


def _foreign_files_message(out: Path, foreign: list) -> str:
    shown = ", ".join(e.name + ("/" if e.is_dir() else "") for e in foreign[:5])
    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
    return (f"--output-dir {out} holds files that python -m train did not write: {shown}{more}. A run never deletes "
            "or writes over them, not even with --overwrite: move them elsewhere, or pick another --output-dir "
            "(a new or empty folder).")


def claim(output_dir, names) -> None:
    """Mark `names` (entries at the top of output_dir) as this run's in the manifest. Call it *before*
    writing them, so a kill midway leaves nothing a later run would take for the user's."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    owned = _manifest(out) - {MANIFEST_FILE, MANIFEST_TMP}
    if set(names) <= owned and (out / MANIFEST_FILE).exists():
        return
    _write_manifest(out, owned | set(names))


def settle_manifest(output_dir) -> None:
    """At the end of a run: forget names it marked but did not write (checkpoints rotated away, files
    this model's save did not need), so a file the user puts there later is never taken for the run's."""
    out = Path(output_dir)
    _write_manifest(out, (_manifest(out) - {MANIFEST_FILE, MANIFEST_TMP}) & {e.name for e in out.iterdir()})


def _write_manifest(out: Path, names: set) -> None:
    manifest = {"written_by": "python -m train (open Dolly)", "files": sorted(names)}
    (out / MANIFEST_TMP).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(out / MANIFEST_TMP, out / MANIFEST_FILE)  # atomic: a kill leaves the old or the new one


def prepare_output_dir(args) -> None:
    """Main process only, after every check: delete what an earlier run of ours left when it is to go
    (--overwrite, or a run that stopped before its first checkpoint), mark the folder as this run's,
    and record the flags for --resume."""
    out = Path(args.output_dir)
    owned, foreign = _contents(out)
    if foreign:  # put there since check_output_dir looked
        raise TrainError(_foreign_files_message(out, foreign))
    if owned and (args.overwrite or not _worth_keeping(owned)):
        # The manifest goes last: a kill midway leaves what is left still marked as ours.
        for entry in sorted(owned, key=lambda e: e.name in (MANIFEST_FILE, MANIFEST_TMP)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
    claim(out, [RUN_ARGS_FILE, "runs"] + (["adapter"] if args.lora_r else []))
    if not (out / RUN_ARGS_FILE).exists():  # a resumed run keeps the flags it started with
        (out / RUN_ARGS_FILE).write_text(json.dumps(vars(args), indent=2) + "\n", encoding="utf-8")


def last_checkpoint(out: Path) -> str | None:
    """The newest *complete* checkpoint: a kill -9 while one was being written leaves it without
    trainer_state.json (written last), and resuming from it would fail."""
    done = [p for p in Path(out).glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _previous_args(out: Path):
    try:
        return json.loads((out / RUN_ARGS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _jsonable(value):
    return json.loads(json.dumps(value))


def select_categories(frame, categories, source):
    """Keep the asked-for categories; unknown names and empty results are errors."""
    present = sorted(frame["category"].unique()) if len(frame) else []
    if categories:
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise TrainError(f"Unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} in {source}. "
                             f"Valid: {', '.join(present) or '(the data has no records)'}.")
        frame = frame[frame["category"].isin(categories)].reset_index(drop=True)
    if frame.empty:
        raise TrainError(f"No records to train on in {source}" + (f" for {', '.join(categories)}" if categories else "")
                         + ". Check --data and --categories.")
    return frame


def load_model_config(base_model: str):
    """The base model's config (a few KB): proves the model exists before anything heavy loads."""
    from transformers import AutoConfig

    path = Path(base_model).expanduser()
    looks_local = is_local(base_model)
    if looks_local:
        if not path.is_dir():
            raise TrainError(f"Base model folder not found: {base_model}. Give a Hub id (EleutherAI/pythia-2.8b) "
                             f"or a local folder: {OFFLINE_MODEL_HINT}.")
        if not (path / "config.json").exists():
            raise TrainError(f"{base_model} has no config.json, so it is not a saved model. Point --base-model at the "
                             "folder `save_pretrained` wrote (config.json, *.safetensors, tokenizer files).")
    try:
        return AutoConfig.from_pretrained(str(path) if looks_local else base_model)
    except Exception as err:
        if looks_local:
            raise TrainError(f"Could not load the model config in {base_model}: {type(err).__name__}: "
                             f"{str(err).splitlines()[0]}. Point --base-model at a folder `save_pretrained` wrote.") from None
        reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else f"{type(err).__name__}: {str(err).splitlines()[0]}"
        raise TrainError(
            f"Could not load base model '{base_model}' from the Hugging Face Hub ({reason}). Check the id "
            f"(e.g. EleutherAI/pythia-2.8b), or, without the Hub, use a local copy: {OFFLINE_MODEL_HINT}."
        ) from None


def check_max_length(args, config) -> None:
    window = getattr(config, "max_position_embeddings", None)
    if window and args.max_length > window:
        raise TrainError(f"--max-length {args.max_length} is longer than {args.base_model}'s context window of "
                         f"{window} tokens. Use --max-length {window} or less.")
