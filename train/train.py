"""The Dolly SFT recipe, top to bottom: data -> tokens with response-only labels -> Trainer (+ DeepSpeed,
+ LoRA) -> eval per category -> save -> samples -> model card -> Hub.

    python -m train --base-model EleutherAI/pythia-2.8b --deepspeed ds_z3_bf16.json --bf16
    deepspeed --num_gpus 8 --module train --deepspeed ds_z3_bf16.json --bf16 --push-to-hub me/dolly-v2-12b

`python -m train --help` lists every flag; train/cli.py checks them, before anything heavy loads.
"""
import json
import os
import socket
import sys
from functools import partial
from pathlib import Path

from dolly.data import OFFLINE_HINT, DataError, missing_note, read_dataset, source_name
from train import cli, disk
from train.cli import TrainError
from train.data import (LengthGroupedSampler, check_complete, grouped_order, make_collator, padding_stats,
                        split_rows, to_dataset, tokenize_frame)
from dolly.prompt import SPECIAL_TOKENS, add_special_tokens, encode_prompt, extract_response, stop_token_ids

# Every GPT-NeoX linear layer, the output head included: the head's rows for the new markers start
# at an average embedding, and the model must learn to write `### End`.
LORA_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "embed_out"]


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log(message: str) -> None:
    if is_main():
        print(f"[train] {message}", flush=True)


def main(argv=None) -> int:
    args = cli.parse_args(argv)
    try:
        run(args)
    except (TrainError, DataError) as err:
        # The shared loader's offline hint names the app's flag; point at this command's instead.
        message = str(err).replace(OFFLINE_HINT, "python -m train --data path/to/databricks-dolly-15k.jsonl")
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


def run(args) -> dict:
    # 1. Everything that can be wrong with the inputs, cheapest first, before any weights load.
    cli.check_flags(args)
    if args.eval_tasks:  # a typo in a task name or a bad task file costs seconds, not a training run
        from train.eval import check_training_eval

        check_training_eval(args)
    resume_from = cli.check_output_dir(args)
    loaded = read_dataset(args.data, progress=is_main())
    data_name = source_name(args.data)
    frame = cli.select_categories(loaded.frame, args.categories, data_name)
    complete = check_complete(frame, data_name)  # records without an instruction or a response are skipped
    config = cli.load_model_config(args.base_model)
    cli.check_max_length(args, config)
    # Room for one checkpoint, sized from the config (the weights are not read yet).
    needed = disk.checkpoint_bytes(config, lora=bool(args.lora_r))
    disk.check_room(Path(args.output_dir), needed)
    # A disk that fills while the run writes checkpoints, the model or its card: a message, not a traceback.
    writes = partial(disk.full_disk_is_a_message, args.output_dir, needed, is_main())

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

    from train.trainer import DollyTrainer  # imported here: transformers is slow to import

    # 2. Tokenizer with Dolly's markers as special tokens; pad = eos (Pythia has no pad token).
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    add_special_tokens(tokenizer)
    files = loaded.files_note()
    note = missing_note(complete["missing"])
    if loaded.sources:  # several sources mixed: how many records each gave (before --categories)
        log("mixing " + ", ".join(f"{n} records from {name}" for name, n in loaded.sources.items()))
    log(f"{len(frame)} records from {data_name}" + (f", read from {files}" if files else "") + (f"; {note}" if note else "")
        + (f"; skipping the {complete['skipped']} without an instruction or a response" if complete["skipped"] else ""))
    rows, dropped = tokenize_frame(tokenizer, frame, args.max_length, progress=is_main())
    if dropped:
        log(f"dropped {sum(dropped.values())} record(s) longer than --max-length {args.max_length} tokens: "
            + ", ".join(f"{c}: {n}" for c, n in dropped.items()))
    if not rows:
        raise TrainError(f"All {len(frame) - complete['skipped']} records are longer than --max-length {args.max_length} tokens. "
                         "Raise --max-length (up to the model's window) or check the data.")
    try:
        train_rows, eval_rows = split_rows(rows, args.test_size, args.seed)
    except ValueError as err:
        raise TrainError(str(err)) from None
    log(f"{len(train_rows)} training and {len(eval_rows)} eval records from {data_name}")

    # 3. From here on, heavy work: make room in the output dir and record how the run was started.
    if resume_from is None and args.resume:
        log(f"--resume: no complete checkpoint in {args.output_dir} yet, starting from the beginning")
    if is_main():
        cli.prepare_output_dir(args)

    if args.deepspeed and "RANK" not in os.environ:
        # A plain `python -m train --deepspeed ...` is a one-process distributed job.
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    # TrainingArguments before the model: with ZeRO-3 it makes from_pretrained load straight into shards.
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_batch_size,
        per_device_eval_batch_size=args.per_device_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        activation_checkpointing=args.gradient_checkpointing,
        deepspeed=args.deepspeed,
        # Without use_cpu, DeepSpeed ranks on a GPU-less machine each silently train alone.
        use_cpu=not torch.cuda.is_available(),
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=args.eval_steps or args.save_steps,
        report_to=["tensorboard"],  # event files under <output-dir>/runs/
        remove_unused_columns=True,  # drops the length/category columns before the collator
        ddp_find_unused_parameters=False,
    )

    # Touching .device sets up torch.distributed now; DeepSpeed keeps its own view of it, which must
    # exist before a ZeRO-3 load (zero.Init) or it sizes batches for one rank and stops.
    _ = training_args.device
    if args.deepspeed:
        import deepspeed

        deepspeed.init_distributed()

    # 4. The model: base weights, embeddings grown for the markers, optionally wrapped in LoRA.
    # Seeded first: the markers' new embedding rows (and LoRA's A matrices) are drawn at random.
    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=torch.float32)
    # Pythia's embedding matrix is already padded past its vocabulary (50,432 rows for 50,277 tokens),
    # so the three markers usually fit without resizing; grow it only when they do not.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if args.gradient_checkpointing:
        model.config.use_cache = False
    if args.lora_r:
        model = _wrap_lora(model, tokenizer, args)

    # 5. Batches of similar lengths (padding cut, every row one record) in an order fixed by (seed, epoch).
    train_ds, eval_ds = to_dataset(train_rows), to_dataset(eval_rows) if eval_rows else None
    lengths = [r["length"] for r in train_rows]
    sampler = LengthGroupedSampler(lengths, args.per_device_batch_size, args.seed)
    pad, real = padding_stats(lengths, grouped_order(lengths, args.per_device_batch_size, args.seed, 0),
                              args.per_device_batch_size)
    padding = pad / (pad + real)
    log(f"padding fraction: {padding:.2%} of {pad + real} tokens per epoch (length-grouped batches)")

    trainer = DollyTrainer(sampler, lora=bool(args.lora_r), claim=partial(cli.claim, args.output_dir), model=model,
                           args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                           data_collator=make_collator(tokenizer), processing_class=tokenizer)

    # 6. Train (checkpoints every --save-steps; --resume restarts from the newest complete one).
    if resume_from:
        log(f"resuming from {resume_from}")
    with writes():
        result = trainer.train(resume_from_checkpoint=resume_from)
    if not trainer.loss_covers_whole_run:
        log(f"note: {resume_from} predates the record of the loss before it, so train_loss averages the resumed "
            "steps only")

    # 7. Eval loss overall and per category.
    eval_losses = {}
    if eval_ds is not None:
        eval_losses["all"] = trainer.evaluate()["eval_loss"]
        for category in sorted({r["category"] for r in eval_rows}):
            subset = to_dataset([r for r in eval_rows if r["category"] == category])
            eval_losses[category] = trainer.evaluate(subset, metric_key_prefix=f"eval_{category}")[f"eval_{category}_loss"]
        log("eval loss: " + ", ".join(f"{c} {v:.4f}" for c, v in eval_losses.items()))

    # 8. Save model + tokenizer as plain safetensors (ZeRO-3 gathers the 16-bit weights first).
    out = Path(args.output_dir)
    before_save = set(os.listdir(out)) if is_main() else set()
    if is_main():
        cli.claim(out, _model_files(tokenizer))
    with writes():
        if args.lora_r and not args.no_merge:
            trainer.save_model(str(out / "adapter"))
            trainer.accelerator.wait_for_everyone()
            sample_model = _merge_lora(args, tokenizer, out) if is_main() else None
        else:
            trainer.save_model(str(out))
            sample_model = trainer.model

    # 9. A few generations per category, to eyeball what was learned.
    samples = {}
    if args.samples_per_category > 0 and sample_model is not None:
        samples = _sample(sample_model, tokenizer, frame, eval_rows or train_rows, args, trainer.args.device)
    trainer.accelerator.wait_for_everyone()

    train_loss = result.training_loss
    metrics = {"train_loss": train_loss, "eval_loss": eval_losses, "padding_fraction": padding,
               "dropped_too_long": dropped, "skipped_incomplete": complete["skipped"],
               "missing_fields": complete["missing"], "train_records": len(train_rows), "eval_records": len(eval_rows),
               "global_step": trainer.state.global_step}
    if is_main():
        from train.card import build_card

        # Whatever else the save wrote (weight shards of a big model) is this run's too.
        cli.claim(out, set(os.listdir(out)) - before_save)
        with writes():
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            build_card(args, eval_losses=eval_losses, train_loss=train_loss, n_train=len(train_rows),
                       n_eval=len(eval_rows), dropped=dropped, padding=padding, samples=samples).save(out / "README.md")
        cli.settle_manifest(out)
        log(f"saved model, tokenizer and model card to {out}")
        # 10. Evaluate the saved model (--eval-tasks): the results go into the card before any push.
        if args.eval_tasks:
            from train.eval import EVAL_FILES, evaluate_after_training

            cli.claim(out, EVAL_FILES)
            evaluate_after_training(args, frame, eval_rows)
            cli.settle_manifest(out)
        # 11. Publish. A failure here leaves the local output whole and says so.
        if args.push_to_hub:
            from train.hub import push

            log(f"pushing {out} to the Hub as {args.push_to_hub}")
            log(f"pushed: {push(str(out), args.push_to_hub, args.private)}")
    return metrics


def _model_files(tokenizer) -> set:
    """The names saving the model, tokenizer, metrics and card gives files at the top of the output dir,
    marked as this run's before they exist: a kill during the save leaves nothing that looks foreign."""
    from transformers.tokenization_utils_base import SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE
    from transformers.trainer import TRAINING_ARGS_NAME
    from transformers.utils import CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

    return {CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, TRAINING_ARGS_NAME,
            TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, *tokenizer.vocab_files_names.values(),
            "metrics.json", "README.md"}


def _wrap_lora(model, tokenizer, args):
    from peft import LoraConfig, get_peft_model

    args.lora_alpha = args.lora_alpha or 2 * args.lora_r
    marker_ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    config = LoraConfig(
        task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=LORA_TARGETS,
        # The markers' embedding rows are new: train those rows too, or the model cannot learn to
        # read `### Response:` or write `### End`.
        trainable_token_indices={"embed_in": marker_ids},
    )
    model = get_peft_model(model, config)
    if is_main():
        model.print_trainable_parameters()
    return model


def _merge_lora(args, tokenizer, out: Path):
    """Base weights + saved adapter -> one standalone model in `out`, loadable without peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=torch.float32)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload()
    merged.config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return merged


def _sample(model, tokenizer, frame, rows, args, device):
    """Greedy generations for the first few held-out records of each category (printed, and returned
    for the model card). Every rank runs this: under ZeRO-3 generation needs all shards."""
    import torch

    picked = {}
    for row in rows:
        if len(picked.setdefault(row["category"], [])) < args.samples_per_category:
            picked[row["category"]].append(frame.iloc[row["record"]])
    model.eval()
    samples = {}
    for category in sorted(picked):
        for record in picked[category]:
            ids = torch.tensor([encode_prompt(tokenizer, record["instruction"], record["context"])], device=device)
            with torch.no_grad():
                output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=args.max_new_tokens, eos_token_id=stop_token_ids(tokenizer),
                                        pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=False)
            response = extract_response(text)
            samples.setdefault(category, []).append((record["instruction"][:120], response[:400]))
            log(f"sample [{category}] {record['instruction'][:80]!r} -> {response[:200]!r}")
    return samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
