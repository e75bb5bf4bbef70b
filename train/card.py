"""The model card (README.md with Hub metadata) written next to a trained model."""
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from train.prompt import format_prompt

LICENSE = "mit"  # dolly-v2's license; Pythia is apache-2.0 and dolly-15k CC BY-SA 3.0, both compatible
DOLLY_15K = "databricks/databricks-dolly-15k"


def _hub_id(name: str):
    """`name` if it reads as a Hub repo id (owner/name) rather than a local path, else None."""
    parts = name.split("/")
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or len(parts) != 2 or not all(parts):
        return None
    return name


def build_card(args, *, eval_losses: dict, train_loss, n_train: int, n_eval: int, dropped: dict,
               padding: float, samples: dict | None = None) -> ModelCard:
    base = _hub_id(args.base_model)
    data = _hub_id(args.data)
    tags = ["dolly", "pythia", "gpt-neox", "instruction-tuned", "open-dolly"] + (["lora"] if args.lora_r else [])
    card_data = ModelCardData(
        license=LICENSE, base_model=base, datasets=[data] if data else None, language=["en"],
        library_name="transformers", pipeline_tag="text-generation", tags=tags,
    )
    name = args.push_to_hub or Path(args.output_dir).name
    loss_rows = "\n".join(f"| {cat} | {loss:.4f} |" for cat, loss in eval_losses.items()) or "| (no eval split) | |"
    dropped_text = ", ".join(f"{c}: {n}" for c, n in dropped.items()) or "none"
    recipe = {
        "base model": args.base_model, "data": args.data + (f" (categories: {', '.join(args.categories)})" if args.categories else ""),
        "epochs": args.epochs if args.max_steps <= 0 else f"{args.max_steps} steps", "learning rate": args.lr,
        "warm-up steps": args.warmup_steps, "per-device batch size": args.per_device_batch_size,
        "gradient accumulation": args.gradient_accumulation_steps, "global batch size": args.global_batch_size,
        "max length (tokens)": args.max_length, "seed": args.seed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "DeepSpeed": Path(args.deepspeed).name if args.deepspeed else "no",
        "LoRA": f"r={args.lora_r}, alpha={args.lora_alpha}" + (" (adapter only)" if args.no_merge else " (merged)") if args.lora_r else "no (full fine-tune)",
        "train / eval records": f"{n_train} / {n_eval}", "records dropped as too long": dropped_text,
        "padding fraction": f"{padding:.1%}", "final train loss": f"{train_loss:.4f}" if train_loss is not None else "n/a",
    }
    recipe_rows = "\n".join(f"| {k} | {v} |" for k, v in recipe.items())
    sample_text = ""
    for category, pairs in (samples or {}).items():
        for instruction, response in pairs:
            sample_text += f"\n**{category}** — {instruction}\n\n> {response.replace(chr(10), ' ')}\n"
    body = f"""
# {name}

An instruction-following model in the manner of [Dolly 2.0](https://huggingface.co/databricks/dolly-v2-12b):
`{args.base_model}` fine-tuned on `{args.data}` with open Dolly (`python -m train`).

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
