"""The `dolly` task (answers to dolly-15k instructions scored per category against the human ones) and
`python -m train --eval-tasks` (the same evaluation at the end of training, before any push). Offline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from dolly.data import load_records
from tests.dolly_data import make_records, write_jsonl
from tests.eval_data import write_task_data
from tests.tiny_model import save_scripted_model, save_tiny_model
from train.eval import main as eval_main
from train.eval_dolly import grounding
from train.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SCRIPT = " The capital of the river is"  # what the scripted model answers, whatever it is asked
ANSWER = SCRIPT.strip()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def test_dolly_task_scores_each_category_against_the_references(tmp_path):
    model = save_scripted_model(tmp_path / "scripted", SCRIPT)
    records = [
        # The answer is the reference, and its content words (capital, river) are all in the context.
        {"instruction": "What is it?", "context": "A river has a capital city.", "response": ANSWER,
         "category": "closed_qa"},
        # Nothing shared with the reference; the context has none of the answer's content words.
        {"instruction": "Sum it up.", "context": "Mountains are tall and cold.", "response": "Tall cold mountains stand",
         "category": "summarization"},
        # The reference says the answer twice: ROUGE-L F1 = 2PR/(P+R) with P=1, R=1/2; half as long.
        {"instruction": "Tell me.", "context": "", "response": f"{ANSWER} {ANSWER}", "category": "open_qa"},
    ]
    data = write_jsonl(tmp_path / "dolly.jsonl", records)
    out = tmp_path / "results.json"
    assert eval_main(["--model", str(model), "--tasks", "dolly", "--data", str(data), "--output", str(out),
                      "--max-new-tokens", "16"]) == 0
    results = json.loads(out.read_text())
    assert results["gmean"] is None  # the card's gmean is over lm-eval tasks only
    dolly = results["tasks"]["dolly"]
    rows = dolly["categories"]
    assert dolly["n"] == 3 and dolly["metric"] == "rougeL" and list(rows) == ["all", "closed_qa", "open_qa",
                                                                               "summarization"]
    assert rows["closed_qa"] == {"n": 1, "rougeL": 1.0, "length_ratio": 1.0, "grounding": 1.0}
    assert rows["summarization"] == {"n": 1, "rougeL": 0.0, "length_ratio": 6 / 4, "grounding": 0.0}
    assert rows["open_qa"]["rougeL"] == pytest.approx(2 / 3) and rows["open_qa"]["length_ratio"] == 0.5
    assert rows["open_qa"]["grounding"] is None  # no context to be grounded in
    assert rows["all"]["rougeL"] == pytest.approx((1 + 0 + 2 / 3) / 3) == dolly["score"]
    assert rows["all"]["grounding"] == 0.5  # the mean over the context categories only

    # The generations open as a dolly dataset (the Explorer's loader), worst ROUGE-L first.
    generations = Path(dolly["generations"])
    assert generations == tmp_path / "results_dolly.jsonl"
    frame = load_records(str(generations), progress=False)
    assert list(frame.columns[:4]) == ["instruction", "context", "response", "category"]
    assert list(frame["category"]) == ["summarization", "open_qa", "closed_qa"]
    assert set(frame["response"]) == {ANSWER}
    assert list(frame["reference"]) == [records[1]["response"], records[2]["response"], ANSWER]
    assert list(frame["rougeL"]) == sorted(frame["rougeL"])


def test_grounding_counts_content_words_only():
    assert grounding("The river of the city", "a city by a river") == 1.0
    assert grounding("The river and the moon", "a river") == 0.5
    assert grounding("the of and", "anything") is None


def _train_flags(tiny, data, out, *extra):
    return ["--base-model", str(tiny), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
            "--test-size", "16", "--per-device-batch-size", "8", "--warmup-steps", "0", "--logging-steps", "5",
            "--samples-per-category", "0", "--max-steps", "4", "--save-steps", "4", "--lr", "1e-3",
            "--max-new-tokens", "16", *extra]


def test_train_with_eval_tasks_evaluates_before_the_end_and_the_split_is_recovered_later(tmp_path, capsys):
    tiny = save_tiny_model(tmp_path / "tiny", max_positions=256)
    data = write_jsonl(tmp_path / "dolly.jsonl", make_records(96, seed=0, chars_per_row=120))
    tasks = write_task_data(tmp_path / "tasks", ["piqa"], n=6)
    out = tmp_path / "out"
    assert train_main(_train_flags(tiny, data, out, "--eval-tasks", "piqa,dolly", "--eval-task-data", str(tasks))) == 0

    results = json.loads((out / "eval_results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert results["tasks"]["piqa"]["n"] == 6
    assert results["tasks"]["dolly"]["n"] == metrics["eval_records"] == 16
    assert "held out of" in results["dolly_source"]
    card = ModelCard.load(out / "README.md")
    assert {r.task_name for r in card.data.eval_results} == {"piqa"}  # dolly: a local file, not a Hub dataset
    assert "## Training" in card.text and "| closed_qa |" in card.text  # training's card kept, eval table added
    owned = json.loads((out / "run_files.json").read_text())["files"]
    assert {"eval_results.json", "eval_results_dolly.jsonl"} <= set(owned)

    # Later, on its own: the same held-out records, recomputed from run_args.json with train/data.py.
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "train.eval", "--model", str(out), "--tasks", "dolly",
                           "--max-new-tokens", "16", "--output", str(tmp_path / "later.json")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dolly task: 16 records, the split `python -m train` held out of" in done.stdout
    during = load_records(str(out / "eval_results_dolly.jsonl"), progress=False)
    later = load_records(str(tmp_path / "later_dolly.jsonl"), progress=False)
    assert sorted(during["instruction"]) == sorted(later["instruction"]) and len(later) == 16
    # Greedy decoding of the same model: the same answers and scores.
    assert sorted(zip(during["instruction"], during["response"])) == sorted(zip(later["instruction"], later["response"]))
    # --data naming the training file again also means its held-out split, never records the model learned.
    assert eval_main(["--model", str(out), "--tasks", "dolly", "--data", str(data), "--max-new-tokens", "16",
                      "--output", str(tmp_path / "again.json")]) == 0
    assert sorted(load_records(str(tmp_path / "again_dolly.jsonl"), progress=False)["instruction"]) == \
        sorted(later["instruction"])
    assert "dolly task: 16 records, the split `python -m train` held out of" in capsys.readouterr().out
    # Another file: every one of its records (README, "Evaluating a Dolly").
    other = write_jsonl(tmp_path / "other.jsonl", make_records(5, seed=3, chars_per_row=80))
    assert eval_main(["--model", str(out), "--tasks", "dolly", "--data", str(other), "--max-new-tokens", "4",
                      "--output", str(tmp_path / "other.json")]) == 0
    assert f"dolly task: 5 records, records of {other}." in capsys.readouterr().out
    assert len(load_records(str(tmp_path / "other_dolly.jsonl"), progress=False)) == 5


def test_train_refuses_a_bad_eval_task_before_training(tmp_path, capsys):
    tiny = save_tiny_model(tmp_path / "tiny", max_positions=256)
    data = write_jsonl(tmp_path / "dolly.jsonl", make_records(40, seed=0, chars_per_row=120))
    out = tmp_path / "out"
    assert train_main(_train_flags(tiny, data, out, "--eval-tasks", "piqa,mmlu")) == 2
    assert "Unknown task mmlu. Known tasks:" in capsys.readouterr().err
    assert train_main(_train_flags(tiny, data, out, "--eval-tasks", "piqa", "--eval-task-data", str(tmp_path))) == 2
    assert "has no piqa.jsonl" in capsys.readouterr().err
    assert train_main(_train_flags(tiny, data, out, "--eval-tasks", "dolly", "--test-size", "0")) == 2
    assert "--test-size 0 holds none out" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written
