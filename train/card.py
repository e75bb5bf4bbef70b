"""The model card (README.md with Hub metadata) written next to a trained model, and the evaluation
results that `python -m train.eval` adds to it (Hub `model-index` metadata plus a table in the body)."""
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from dolly.prompt import format_prompt
from dolly.data import source_name
from dolly.source import hub_id

LICENSE = "mit"  # dolly-v2's license; Pythia is apache-2.0 and dolly-15k CC BY-SA 3.0, both compatible
DOLLY_15K = "databricks/databricks-dolly-15k"


def build_card(args, *, eval_losses: dict, train_loss, n_train: int, n_eval: int, dropped: dict,
               padding: float, samples: dict | None = None) -> ModelCard:
    base = hub_id(args.base_model)
    datas = args.data if isinstance(args.data, list) else [args.data]  # several --data: all named
    hub_datas = [d for d in map(hub_id, datas) if d]
    tags = ["dolly", "pythia", "gpt-neox", "instruction-tuned", "open-dolly"] + (["lora"] if args.lora_r else [])
    card_data = ModelCardData(
        license=LICENSE, base_model=base, datasets=hub_datas or None, language=["en"],
        library_name="transformers", pipeline_tag="text-generation", tags=tags,
    )
    name = args.push_to_hub or Path(args.output_dir).name
    loss_rows = "\n".join(f"| {cat} | {loss:.4f} |" for cat, loss in eval_losses.items()) or "| (no eval split) | |"
    dropped_text = ", ".join(f"{c}: {n}" for c, n in dropped.items()) or "none"
    recipe = {
        "base model": args.base_model, "data": source_name(args.data) + (f" (categories: {', '.join(args.categories)})" if args.categories else ""),
        "epochs": args.epochs if args.max_steps <= 0 else f"{args.max_steps} steps", "learning rate": args.lr,
        "warm-up steps": args.warmup_steps, "per-device batch size": args.per_device_batch_size,
        "gradient accumulation": args.gradient_accumulation_steps, "global batch size": args.global_batch_size,
        "max length (tokens)": args.max_length, "seed": args.seed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "DeepSpeed": Path(args.deepspeed).name if args.deepspeed else "no",
        "LoRA": f"r={args.lora_r}, alpha={args.lora_alpha}" + (" (adapter only)" if args.no_merge else " (merged)") if args.lora_r else "no (full fine-tune)",
        "train / eval records": f"{n_train} / {n_eval}", "records dropped as too long": dropped_text,
        "padding fraction": f"{padding:.1%}", "train loss (mean over all steps)": f"{train_loss:.4f}" if train_loss is not None else "n/a",
    }
    recipe_rows = "\n".join(f"| {k} | {v} |" for k, v in recipe.items())
    sample_text = ""
    for category, pairs in (samples or {}).items():
        for instruction, response in pairs:
            sample_text += f"\n**{category}** — {instruction}\n\n> {response.replace(chr(10), ' ')}\n"
    body = f"""
# {name}

An instruction-following model in the manner of [Dolly 2.0](https://huggingface.co/databricks/dolly-v2-12b):
`{args.base_model}` fine-tuned on `{source_name(args.data)}` with open Dolly (`python -m train`).

## Prompt format

The model expects Dolly's prompt exactly and ends its answer with `### End`:

```
{format_prompt("<instruction>", "<optional context>")}<response>

### End
```

The `Input:` block is left out when there is no context. `### End`, `### Instruction:` and
`### Response:\\n` are special tokens.

## Chat with it

```bash
python app.py --model {args.push_to_hub or args.output_dir}
```

or with transformers: tokenize the prompt above, `generate(..., eos_token_id=tokenizer.convert_tokens_to_ids("### End"))`,
and read the text after `### Response:`.

## Training

| setting | value |
|---|---|
{recipe_rows}

## Evaluation loss (held-out split)

| category | loss |
|---|---|
{loss_rows}

## Sample generations
{sample_text or chr(10) + "(none)"}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


# --- Evaluation results (python -m train.eval) ---------------------------------------------------------

EVAL_START = "<!-- open-dolly eval: start (rewritten by python -m train.eval) -->"
EVAL_END = "<!-- open-dolly eval: end -->"
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def comparison_table(results: dict) -> str:
    """Markdown: the evaluated model among the dolly-v2 card's rows, sorted by gmean as the card is
    (ascending), over the tasks that were run."""
    from train.eval_tasks import DOLLY_TASKS, published_rows

    tasks = [t for t in DOLLY_TASKS if t in results["tasks"]]
    if not tasks:
        return ""
    rows = published_rows(tasks)
    mine = {t: results["tasks"][t]["score"] for t in tasks}
    mine["gmean"] = results["gmean"]
    name = f"**{results['model']}** (this model)"
    rows[name] = mine
    lines = [f"| model | {' | '.join(tasks)} | gmean |", "|---" * (len(tasks) + 2) + "|"]
    for model, row in sorted(rows.items(), key=lambda item: item[1]["gmean"]):
        lines.append(f"| {model} | " + " | ".join(_fmt(row[t]) for t in tasks) + f" | {_fmt(row['gmean'])} |")
    return "\n".join(lines)


def eval_section(results: dict) -> str:
    """The card body's evaluation section (between markers, so a re-run replaces it)."""
    from train.eval_tasks import HARNESS_TASKS

    parts = [EVAL_START, "## Evaluation", ""]
    harness = {t: r for t, r in results["tasks"].items() if t in HARNESS_TASKS}
    if harness:
        parts += [
            f"Zero-shot [lm-evaluation-harness]({LM_EVAL_URL}) {results.get('lm_eval_version', '')} "
            f"(`python -m train.eval`), the tasks and metric of the dolly-v2 model card: `score` is `acc_norm` "
            "where the task has it, else `acc`; gmean is their geometric mean.",
            "",
            "| task | acc | acc_norm | score | documents |",
            "|---|---|---|---|---|",
            *(f"| {t} | {_fmt(r.get('acc'))} | {_fmt(r.get('acc_norm'))} | {_fmt(r['score'])} | {r['n']} |"
              for t, r in harness.items()),
            "",
            "Beside the dolly-v2 model card's numbers:",
            "",
            comparison_table(results),
            "",
        ]
    dolly = results["tasks"].get("dolly")
    if dolly:
        parts += [
            f"Answers to {dolly['n']} dolly-15k instructions ({results.get('dolly_source', '')}), greedy, "
            "scored against the human responses: ROUGE-L F1, answer/reference length in words, and for "
            "context categories the share of the answer's content words found in the context.",
            "",
            "| category | records | ROUGE-L | length ratio | grounding |",
            "|---|---|---|---|---|",
            *(f"| {c} | {r['n']} | {_fmt(r['rougeL'])} | {_fmt(r['length_ratio'], 2)} | {_fmt(r['grounding'])} |"
              for c, r in dolly["categories"].items()),
            "",
        ]
    parts.append(EVAL_END)
    return "\n".join(parts)


def eval_results(results: dict) -> list:
    """huggingface_hub EvalResults (the card's `model-index`): acc and acc_norm of each lm-eval task, and
    the dolly task's ROUGE-L when its records came from a Hub dataset."""
    from train.eval_tasks import HARNESS_TASKS

    out = []
    for name, row in results["tasks"].items():
        if name in HARNESS_TASKS:
            task = HARNESS_TASKS[name]
            for metric in ("acc", "acc_norm"):
                if metric in row:
                    out.append(EvalResult(
                        task_type="text-generation", task_name=name, dataset_type=task.hub, dataset_name=task.title,
                        dataset_config=task.config, dataset_split=task.split, dataset_args={"num_few_shot": 0},
                        metric_type=metric, metric_value=round(row[metric], 6),
                        source_name="lm-evaluation-harness", source_url=LM_EVAL_URL))
        elif name == "dolly" and hub_id(results.get("dolly_data") or ""):
            out.append(EvalResult(
                task_type="text-generation", task_name="dolly", dataset_type=results["dolly_data"],
                dataset_name="databricks-dolly-15k (held out)" if results["dolly_data"] == DOLLY_15K else results["dolly_data"],
                dataset_split="train", metric_type="rougeL", metric_name="ROUGE-L F1",
                metric_value=round(row["score"], 6)))
    return out


def add_eval_results(card_text: str, results: dict, model_name: str) -> ModelCard:
    """`card_text` with the results in its metadata (model-index; earlier results for the same dataset and
    metric replaced, others kept) and its evaluation section replaced or appended; the rest untouched."""
    card = ModelCard(card_text)
    new = eval_results(results)
    fresh = {(r.unique_identifier, r.metric_type) for r in new}
    kept = [r for r in (card.data.eval_results or []) if (r.unique_identifier, r.metric_type) not in fresh]
    card.data.eval_results = kept + new or None
    if card.data.eval_results:
        card.data.model_name = card.data.model_name or model_name
    body = card.text
    start, end = body.find(EVAL_START), body.find(EVAL_END)
    section = eval_section(results)
    if start != -1 and end > start:
        body = body[:start] + section + body[end + len(EVAL_END):]
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n{body}")
