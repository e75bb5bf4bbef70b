"""Dolly's seven lm-evaluation-harness tasks: where their data lives, the offline twin (`--task-data`),
the score Dolly's model card reports for each, and the card's published numbers.

The prompts, choices and metrics are lm-eval's own: a task is always built from lm-eval's YAML for
it. `--task-data DIR` only changes where the documents come from, through lm-eval's `include:` (a
small YAML that includes the original and overrides `dataset_path`/`dataset_kwargs`), so the offline
twin runs exactly the code the Hub run does.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

from train.cli import TrainError

# Dolly's model card, in its column order.
DOLLY_TASKS = ("openbookqa", "arc_easy", "winogrande", "hellaswag", "arc_challenge", "piqa", "boolq")
TASK_FILE_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class HarnessTask:
    name: str
    title: str          # for the card
    hub: str            # the Hub dataset lm-eval loads (its YAML's dataset_path)
    config: str | None  # its dataset_name
    split: str          # the split lm-eval evaluates (test_split if the YAML has one, else validation_split)
    fields: tuple       # what lm-eval's prompt/metric code reads from each document
    schema: str         # one document, as the Hub dataset has it
    folder: str         # where lm-eval keeps the task's YAML, under lm_eval/tasks/


# Checked against lm-eval 0.4.13's YAMLs (lm_eval/tasks/{openbookqa,arc,winogrande,hellaswag,piqa,super_glue/boolq}).
HARNESS_TASKS = {t.name: t for t in (
    HarnessTask("openbookqa", "OpenBookQA", "allenai/openbookqa", "main", "test",
                ("question_stem", "choices", "answerKey"),
                '{"id": "7-980", "question_stem": "...", "choices": {"text": ["...", "...", "...", "..."], '
                '"label": ["A", "B", "C", "D"]}, "answerKey": "B"}', "openbookqa"),
    HarnessTask("arc_easy", "ARC (Easy)", "allenai/ai2_arc", "ARC-Easy", "test",
                ("question", "choices", "answerKey"),
                '{"id": "Mercury_7175875", "question": "...", "choices": {"text": ["...", "..."], '
                '"label": ["A", "B"]}, "answerKey": "A"}', "arc"),
    HarnessTask("winogrande", "WinoGrande", "allenai/winogrande", "winogrande_xl", "validation",
                ("sentence", "option1", "option2", "answer"),
                '{"sentence": "... _ ...", "option1": "...", "option2": "...", "answer": "1"}', "winogrande"),
    HarnessTask("hellaswag", "HellaSwag", "Rowan/hellaswag", None, "validation",
                ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
                '{"activity_label": "...", "ctx_a": "...", "ctx_b": "...", "endings": ["...", "...", "...", "..."], '
                '"label": "3"}', "hellaswag"),
    HarnessTask("arc_challenge", "ARC (Challenge)", "allenai/ai2_arc", "ARC-Challenge", "test",
                ("question", "choices", "answerKey"),
                '{"id": "Mercury_7175875", "question": "...", "choices": {"text": ["...", "..."], '
                '"label": ["A", "B"]}, "answerKey": "A"}', "arc"),
    HarnessTask("piqa", "PIQA", "baber/piqa", None, "validation", ("goal", "sol1", "sol2", "label"),
                '{"goal": "...", "sol1": "...", "sol2": "...", "label": 0}', "piqa"),
    HarnessTask("boolq", "BoolQ", "aps/super_glue", "boolq", "validation", ("question", "passage", "label"),
                '{"question": "...", "passage": "...", "idx": 0, "label": 1}', "super_glue/boolq"),
)}

# The dolly-v2 model card's table (lm-eval zero-shot), in its order: ascending geometric mean.
PUBLISHED = {
    "EleutherAI/pythia-2.8b": (0.348, 0.585859, 0.589582, 0.591217, 0.323379, 0.73395, 0.638226),
    "EleutherAI/pythia-6.9b": (0.368, 0.604798, 0.608524, 0.631548, 0.343857, 0.761153, 0.6263),
    "databricks/dolly-v2-3b": (0.384, 0.611532, 0.589582, 0.650767, 0.370307, 0.742655, 0.575535),
    "EleutherAI/pythia-12b": (0.364, 0.627104, 0.636148, 0.668094, 0.346416, 0.760065, 0.673394),
    "databricks/dolly-v2-12b": (0.408, 0.63931, 0.616417, 0.707927, 0.388225, 0.757889, 0.568196),
    "databricks/dolly-v2-7b": (0.392, 0.633838, 0.607735, 0.686517, 0.406997, 0.750816, 0.644037),
}
PUBLISHED_GMEAN = {
    "EleutherAI/pythia-2.8b": 0.523431, "EleutherAI/pythia-6.9b": 0.543567, "databricks/dolly-v2-3b": 0.544886,
    "EleutherAI/pythia-12b": 0.559676, "databricks/dolly-v2-12b": 0.56781, "databricks/dolly-v2-7b": 0.573487,
}


def score_metric(results: dict) -> str:
    """The metric the card reports: `acc_norm` where lm-eval computes one, else `acc`. The card's
    numbers are counts over the full splits (openbookqa 0.364 = 182/500) and match acc_norm where the
    two differ clearly: pythia-12b's own evals give arc_easy acc 0.69 / acc_norm 0.63 (card 0.627),
    arc_challenge 0.31 / 0.34 (card 0.346), openbookqa acc_norm 0.364. winogrande and boolq have only acc."""
    return "acc_norm" if "acc_norm" in results else "acc"


def gmean(values) -> float:
    values = list(values)
    if not values:
        return float("nan")
    if min(values) <= 0:
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def published_rows(tasks) -> dict:
    """{model: {task: score, ..., "gmean": g}} for the tasks asked for; the gmean is the card's when all
    seven were run, else recomputed over the same subset so the rows compare."""
    rows = {}
    for model, scores in PUBLISHED.items():
        row = {t: s for t, s in zip(DOLLY_TASKS, scores) if t in tasks}
        row["gmean"] = PUBLISHED_GMEAN[model] if set(tasks) >= set(DOLLY_TASKS) else gmean(row.values())
        rows[model] = row
    return rows


def task_file(task_data: Path, name: str) -> Path:
    """`DIR/<task>.jsonl` or `DIR/<task>.parquet`; a clear error naming both when neither is there."""
    for suffix in TASK_FILE_SUFFIXES:
        path = task_data / f"{name}{suffix}"
        if path.is_file():
            return path
    task = HARNESS_TASKS[name]
    raise TrainError(
        f"--task-data {task_data} has no {name}.jsonl (or {name}.parquet) for the task {name}. It must hold the "
        f"{task.split} split of {task.hub}{' (' + task.config + ')' if task.config else ''}, one document per line "
        f"like {task.schema}; see the README (Evaluation) for the `hf download` command."
    )


def check_task_file(path: Path, name: str) -> int:
    """Check that `path` holds documents in the task's Hub schema; return how many. Reads the whole file
    (the largest, hellaswag's validation split, is ~50 MB)."""
    task = HARNESS_TASKS[name]
    expected = f"Each document needs {', '.join(task.fields)}, as in {task.hub}: {task.schema}"
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:
            raise TrainError(f"{path} is not a readable Parquet file ({err}).") from None
        missing = [f for f in task.fields if f not in table.column_names]
        if missing:
            raise TrainError(f"{path} (task {name}) has no field {', '.join(missing)}. {expected}")
        count = table.num_rows
    else:
        count = 0
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TrainError(f"{path} is not UTF-8 text. Re-save it as UTF-8 JSON lines.") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                raise TrainError(f"{path}: line {number} is not valid JSON ({err.msg}). One JSON object per line.") from None
            if not isinstance(doc, dict):
                raise TrainError(f"{path}: line {number} is not a JSON object. {expected}")
            missing = [f for f in task.fields if f not in doc]
            if missing:
                raise TrainError(f"{path}: line {number} (task {name}) has no field {', '.join(missing)}. {expected}")
            count += 1
    if count == 0:
        raise TrainError(f"{path} is empty: the task {name} has no documents to evaluate. {expected}")
    return count


def local_task_yaml(task_manager, name: str, data_file: Path, folder: Path) -> Path:
    """Write `<folder>/<name>.yaml`: lm-eval's own task (by `include:` of its YAML, found through the
    TaskManager's index) with only the data source replaced by `data_file`; return its path."""
    entry = task_manager.task_index[name]
    task = HARNESS_TASKS[name]
    builder = "parquet" if data_file.suffix == ".parquet" else "json"
    # Only the evaluated split exists locally; zero-shot needs no training split.
    splits = {"training_split": None, "validation_split": None, "test_split": None, f"{_split_key(task)}": task.split}
    config = {
        "include": str(Path(entry.yaml_path).resolve()),
        "dataset_path": builder,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {task.split: str(data_file.resolve())}},
        **splits,
    }
    path = folder / f"{name}.yaml"
    # JSON is YAML: no quoting rules to get wrong for odd paths.
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def _split_key(task: HarnessTask) -> str:
    return "test_split" if task.split == "test" else "validation_split"


def run_harness(lm, names, *, task_data: Path | None, limit: int | None, workdir: Path) -> dict:
    """Run lm-eval zero-shot on `names` with the loaded model `lm` (an lm_eval HFLM). Returns
    {task: {"acc": .., "acc_norm": .. (if any), "score": .., "metric": .., "n": docs}}."""
    import lm_eval
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    # Index only the folders of the tasks asked for: lm-eval's whole index (~15,000 tasks) takes from
    # 10 s to a minute to build, for seven names.
    root = Path(lm_eval.tasks.__file__).parent
    manager = TaskManager(include_defaults=False,
                          include_path=sorted({str(root / HARNESS_TASKS[name].folder) for name in names}))
    missing = [name for name in names if name not in manager.task_index]
    if missing:
        raise TrainError(f"lm-eval {lm_eval.__version__} has no task {', '.join(missing)} where 0.4.13 keeps it "
                         f"({root}); install the pinned version: pip install lm-eval==0.4.13.")
    specs = []
    for name in names:
        if task_data is None:
            specs.append(name)
        else:
            specs.append(str(local_task_yaml(manager, name, task_file(task_data, name), workdir)))
    try:
        output = lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit, num_fewshot=0,
                                         log_samples=False, bootstrap_iters=0)
    except Exception as err:
        if task_data is None:
            from dolly.source import hub_offline

            reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else f"{type(err).__name__}: {_first_line(err)}"
            raise TrainError(f"lm-evaluation-harness could not load or run {', '.join(names)} ({reason}). Without the "
                             "Hub, give the task files with --task-data DIR (see the README, Evaluation).") from None
        # The files have the fields but a value lm-eval's task code cannot use (an answerKey not among
        # the labels, a label out of range, ...).
        raise TrainError(f"lm-evaluation-harness failed on the files in --task-data {task_data} ({type(err).__name__}: "
                         f"{_first_line(err)}). Each file must hold its task's Hub split as is; see the README.") from None
    results = {}
    for name in names:
        raw = output["results"][name]
        row = {metric: raw[f"{metric},none"] for metric in ("acc", "acc_norm") if f"{metric},none" in raw}
        metric = score_metric(row)
        row.update(score=row[metric], metric=metric, n=int(output["n-samples"][name]["effective"]))
        results[name] = row
    return results


def _first_line(err) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
