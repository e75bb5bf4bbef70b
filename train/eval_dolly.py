"""The `dolly` task: answer held-out dolly-15k instructions with Dolly's prompt, and score each answer
against the human one, per category.

- ROUGE-L F1 against the reference (Google's `rouge-score`, with its stemmer, as summarization papers do);
- length ratio: answer words / reference words (1.0 = as long as the human answer);
- grounding (closed_qa, information_extraction, summarization): the share of the answer's content
  words that appear in the context: a low rate means the answer talks about something else.

The records are the split `python -m train` held out (recomputed from the model folder's run_args.json
with train/data.py, the same seed and filters) or the records of a `--data` file.
"""
import json
import re
from pathlib import Path

from dolly.data import DataError, load_records
from dolly.prompt import encode_prompt, extract_response, stop_token_ids
from train.cli import RUN_ARGS_FILE, TrainError

GROUNDED_CATEGORIES = ("closed_qa", "information_extraction", "summarization")
# Function words carry no content: "the answer uses words from the passage" should not be satisfied by
# "the", "of" and "is".
STOPWORDS = frozenset(
    "a an the and or but if then than so of to in on at by for with from as into about over under is are was were "
    "be been being am do does did has have had having it its it's this that these those there here i you he she we "
    "they me him her us them my your his our their what which who whom whose when where why how not no yes can "
    "could would should will shall may might must also just very more most such only own same too s t".split()
)
WORD = re.compile(r"\w+", re.UNICODE)


def _same_source(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list):  # several --data mixed: the same sources in the same order
        a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
        return len(a) == len(b) and all(_same_source(x, y) for x, y in zip(a, b))
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() if Path(a).exists() else a == b
    except OSError:
        return a == b


def held_out_records(model_dir: Path, tokenizer, data: str | None = None):
    """(records `python -m train` held out for the model in `model_dir`, the training data source), or None
    when the folder has no run_args.json (not trained here, or downloaded from the Hub: pushes leave it out),
    or when `data` is another dataset than the one the model was trained on."""
    path = Path(model_dir) / RUN_ARGS_FILE
    if not path.is_file():
        return None
    from train.cli import select_categories
    from train.data import split_rows, tokenize_frame

    run = json.loads(path.read_text(encoding="utf-8"))
    if data is not None and not _same_source(data, run["data"]):
        return None
    try:
        frame = load_records(run["data"])
    except DataError as err:
        raise TrainError(f"Could not reload {run['data']}, the training data named in {path}, to recover the held-out "
                         f"split ({err}) Give the records with --data FILE.") from None
    frame = select_categories(frame, run.get("categories"), run["data"])
    # Training dropped records over --max-length before splitting; the split is over what was left.
    rows, _ = tokenize_frame(tokenizer, frame, run["max_length"], progress=True)
    if not run.get("test_size"):
        raise TrainError(f"{model_dir} was trained with --test-size 0: no records were held out. Give the dolly "
                         "task records with --data FILE.")
    try:
        _, eval_rows = split_rows(rows, run["test_size"], run["seed"])
    except ValueError as err:
        raise TrainError(str(err)) from None
    return frame.iloc[[r["record"] for r in eval_rows]].reset_index(drop=True), run["data"]


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def grounding(answer: str, context: str):
    """Share of the answer's content words found in the context; None when the answer has none."""
    content = [w for w in words(answer) if w not in STOPWORDS]
    if not content:
        return None
    source = set(words(context))
    return sum(w in source for w in content) / len(content)


def score_answer(scorer, answer: str, reference: str, context: str, category: str) -> dict:
    ref_words = len(words(reference))
    return {
        "rougeL": scorer.score(reference, answer)["rougeL"].fmeasure,
        "length_ratio": len(words(answer)) / ref_words if ref_words else None,
        "grounding": grounding(answer, context) if category in GROUNDED_CATEGORIES else None,
    }


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(rows) -> dict:
    """Per-category and overall ("all") means of the three scores, with record counts."""
    groups = {"all": rows}
    for row in rows:
        groups.setdefault(row["category"], []).append(row)
    summary = {}
    for name in ["all"] + sorted(k for k in groups if k != "all"):
        group = groups[name]
        summary[name] = {"n": len(group), **{k: _mean(r[k] for r in group)
                                             for k in ("rougeL", "length_ratio", "grounding")}}
    return summary


def generate_answers(model, tokenizer, frame, *, max_new_tokens: int, window: int):
    """Greedy answers, one record at a time (no padding to reason about; a progress bar). Records whose
    prompt leaves no room in the model's window are skipped and counted."""
    import torch
    from tqdm.auto import tqdm

    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers, skipped = [], 0
    model.eval()
    for record in tqdm(frame.to_dict("records"), desc="dolly: generating", unit=" records"):
        ids = torch.tensor([encode_prompt(tokenizer, record["instruction"], record["context"])], device=model.device)
        room = min(max_new_tokens, window - ids.shape[1])
        if room < 1:
            skipped += 1
            continue
        with torch.no_grad():
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room,
                                    do_sample=False, eos_token_id=stops, pad_token_id=pad)
        text = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=False)
        answers.append((record, extract_response(text)))
    return answers, skipped


def run_dolly(model, tokenizer, frame, *, max_new_tokens: int) -> tuple[dict, list]:
    """Generate and score; returns (the task's result row, the generations sorted worst ROUGE-L first).
    Each generation is a dolly-schema record (its `response` is the model's answer) plus `reference`
    (the human response) and the three scores, so the Explorer opens the file as a dataset."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    window = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    answers, skipped = generate_answers(model, tokenizer, frame, max_new_tokens=max_new_tokens, window=window)
    if not answers:
        raise TrainError(f"The dolly task has no record short enough for the model's {window}-token window.")
    rows = []
    for record, answer in answers:
        rows.append({"instruction": record["instruction"], "context": record["context"], "response": answer,
                     "category": record["category"], "reference": record["response"],
                     **score_answer(scorer, answer, record["response"], record["context"], record["category"])})
    summary = summarize(rows)
    result = {"score": summary["all"]["rougeL"], "metric": "rougeL", "n": len(rows), "skipped_too_long": skipped,
              "categories": summary}
    return result, sorted(rows, key=lambda r: r["rougeL"])
