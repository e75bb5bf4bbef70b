"""`python -m train.eval`: the real lm-evaluation-harness task definitions on tiny local files in each
task's Hub schema, a tiny GPT-NeoX, the results JSON, the printed table and the model card. Offline."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import ModelCard

from tests.eval_data import make_docs, write_task_data
from tests.fake_hub import FakeHub
from tests.tiny_model import save_tiny_model
from train.card import EVAL_END, EVAL_START, add_eval_results
from train.eval import main
from train.eval_tasks import DOLLY_TASKS, PUBLISHED, PUBLISHED_GMEAN, gmean

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CARD = """---
license: mit
base_model: EleutherAI/pythia-70m
tags:
- dolly
- open-dolly
---

# tiny-dolly

Written by hand for the test: this paragraph must survive the evaluation.
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    return write_task_data(tmp_path_factory.mktemp("tasks"), DOLLY_TASKS, n=8)


@pytest.fixture
def model(tmp_path):
    path = save_tiny_model(tmp_path / "model", max_positions=256)
    (path / "README.md").write_text(CARD, encoding="utf-8")
    return path


def test_the_seven_tasks_run_offline_and_fill_json_table_and_card(model, task_data, tmp_path):
    """A fresh `python -m train.eval` process with the Hub switched off: lm-eval's own task YAMLs on the
    local files; JSON, table and card all say the same."""
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "train.eval", "--model", str(model), "--task-data", str(task_data)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((model / "eval_results.json").read_text())
    assert list(results["tasks"]) == list(DOLLY_TASKS)
    for name, row in results["tasks"].items():
        assert row["n"] == 8 and 0 <= row["acc"] <= 1
        # The card's metric: acc_norm where lm-eval has one, else acc (winogrande, boolq).
        assert row["metric"] == ("acc" if name in ("winogrande", "boolq") else "acc_norm")
        assert row["score"] == row[row["metric"]]
        assert math.isclose(row["acc"] * 8, round(row["acc"] * 8))  # a share of 8 documents
    assert math.isclose(results["gmean"], gmean(r["score"] for r in results["tasks"].values()))

    # Printed: the model among the card's rows, ascending gmean as the card sorts them.
    table = [line for line in done.stdout.splitlines() if line.startswith("| ") and line.count("|") == 10]
    names = [line.split("|")[1].strip() for line in table[1:]]
    assert set(names) == set(PUBLISHED) | {"**model** (this model)"}
    gmeans = [float(line.split("|")[-2]) for line in table[1:]]
    assert gmeans == sorted(gmeans)
    assert f"{PUBLISHED_GMEAN['databricks/dolly-v2-12b']:.4f}" in done.stdout

    # The card: model-index through huggingface_hub, the hand-written metadata and body kept.
    card = ModelCard.load(model / "README.md")
    assert card.data.license == "mit" and card.data.base_model == "EleutherAI/pythia-70m"
    assert card.data.tags == ["dolly", "open-dolly"]
    assert "this paragraph must survive the evaluation" in card.text
    found = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert len(found) == 12  # acc for 7 tasks, acc_norm for 5
    assert found[("allenai/ai2_arc", "ARC-Easy", "acc_norm")] == round(results["tasks"]["arc_easy"]["acc_norm"], 6)
    assert found[("aps/super_glue", "boolq", "acc")] == round(results["tasks"]["boolq"]["acc"], 6)
    assert card.data.eval_results[0].dataset_split == "test" and card.data.model_name == "model"
    assert f"| boolq | {results['tasks']['boolq']['acc']:.4f} |" in card.text


def _loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context), split the way lm-eval splits a request: the context's own
    tokens, then whatever the joint text adds."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    return sum(logprobs[len(ctx) - 1 + i, token].item() for i, token in enumerate(cont))


def test_acc_and_acc_norm_equal_a_recomputation_from_the_models_loglikelihoods(tmp_path):
    """piqa through lm-eval vs. by hand: the choice with the highest log-likelihood (acc), or the highest
    log-likelihood per character of the choice (acc_norm), against the gold label."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_model(tmp_path / "model", max_positions=256, seed=3)
    data = write_task_data(tmp_path / "tasks", ["piqa"], n=24, seed=5)
    assert main(["--model", str(folder), "--task-data", str(data), "--tasks", "piqa",
                 "--output", str(tmp_path / "r.json")]) == 0
    got = json.loads((tmp_path / "r.json").read_text())["tasks"]["piqa"]

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    hits = hits_norm = 0
    for doc in make_docs("piqa", 24, seed=5):
        context, choices = f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]]
        scores = [_loglikelihood(model, tokenizer, context, " " + c) for c in choices]
        hits += max(range(2), key=lambda i: scores[i]) == doc["label"]
        hits_norm += max(range(2), key=lambda i: scores[i] / len(choices[i])) == doc["label"]
    assert got["n"] == 24
    assert math.isclose(got["acc"], hits / 24) and math.isclose(got["acc_norm"], hits_norm / 24)
    assert 0 < hits < 24  # the test could fail both ways


def test_limit_takes_the_first_documents_and_leaves_the_card_alone(model, task_data, tmp_path, capsys):
    assert main(["--model", str(model), "--task-data", str(task_data), "--tasks", "arc_easy,boolq", "--limit", "3"]) == 0
    results = json.loads((model / "eval_results.json").read_text())
    assert [r["n"] for r in results["tasks"].values()] == [3, 3] and results["limit"] == 3
    assert (model / "README.md").read_text() == CARD
    out = capsys.readouterr().out
    assert "not comparable" in out and "card was not updated" in out


def test_parquet_files_as_the_hub_exports_them_give_the_same_numbers(model, task_data, tmp_path):
    """The Hub's parquet export (nested `choices` as a struct) and JSON lines are the same documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "parquet"
    folder.mkdir()
    for task in ("arc_easy", "hellaswag"):
        rows = [json.loads(line) for line in (task_data / f"{task}.jsonl").read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{task}.parquet")
    results = {}
    for name, folder_ in (("jsonl", task_data), ("parquet", folder)):
        out = tmp_path / f"{name}.json"
        assert main(["--model", str(model), "--task-data", str(folder_), "--tasks", "arc_easy,hellaswag",
                     "--output", str(out)]) == 0
        results[name] = json.loads(out.read_text())["tasks"]
    assert results["parquet"] == results["jsonl"] and results["parquet"]["arc_easy"]["n"] == 8


def _results(tasks, **extra):
    rows = {t: {"acc": 0.5, "acc_norm": 0.25, "score": 0.25, "metric": "acc_norm", "n": 10} for t in tasks}
    return {"model": "me/dolly", "tasks": rows, "gmean": 0.25, "lm_eval_version": "0.4.13", **extra}


def test_card_round_trip_replaces_earlier_results_and_keeps_the_rest():
    card = add_eval_results(CARD, _results(["arc_easy", "piqa"]), model_name="me/dolly")
    reparsed = ModelCard(str(card))
    assert len(reparsed.data.eval_results) == 4 and reparsed.data.model_name == "me/dolly"
    # Again, with new numbers for one task and a new task: replaced, not duplicated; piqa kept.
    again = _results(["arc_easy", "boolq"])
    again["tasks"]["arc_easy"].update(acc=0.75, acc_norm=0.5, score=0.5)
    card = ModelCard(str(add_eval_results(str(card), again, model_name="me/dolly")))
    found = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found == {("piqa", "acc"): 0.5, ("piqa", "acc_norm"): 0.25, ("arc_easy", "acc"): 0.75,
                     ("arc_easy", "acc_norm"): 0.5, ("boolq", "acc"): 0.5, ("boolq", "acc_norm"): 0.25}
    assert str(card).count(EVAL_START) == 1 and str(card).count(EVAL_END) == 1
    assert card.data.license == "mit" and card.data.tags == ["dolly", "open-dolly"]
    assert "this paragraph must survive" in card.text and "| arc_easy | 0.7500 |" in card.text


def test_push_to_hub_uploads_the_updated_card_without_printing_the_token(model, task_data, tmp_path, monkeypatch, capsys):
    token = "hf_fakeSECRETevaltoken123456"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", token)
    with FakeHub(token) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        assert main(["--model", str(model), "--task-data", str(task_data), "--tasks", "boolq",
                     "--push-to-hub", "me/tiny-dolly"]) == 0
    pushed = hub.files["me/tiny-dolly"]
    assert set(pushed) == {"README.md"}
    assert pushed["README.md"].decode() == (model / "README.md").read_text()
    assert ModelCard(pushed["README.md"].decode()).data.eval_results[0].dataset_type == "aps/super_glue"
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err


# --- bad input: a clear message, exit 2, nothing written ----------------------------------------------

def _broken(tmp_path, task_data, name, text):
    folder = tmp_path / "broken"
    folder.mkdir(exist_ok=True)
    for task in DOLLY_TASKS:
        (folder / f"{task}.jsonl").write_bytes((task_data / f"{task}.jsonl").read_bytes())
    if text is None:
        (folder / f"{name}.jsonl").unlink()
    else:
        (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")
    return folder


def _piqa_without_sol2():
    docs = make_docs("piqa", 3)
    del docs[1]["sol2"]
    return "".join(json.dumps(d) + "\n" for d in docs)


def _arc_with_unknown_key():
    docs = make_docs("arc_easy", 3)
    docs[0]["answerKey"] = "Z"
    return "".join(json.dumps(d) + "\n" for d in docs)


@pytest.mark.parametrize("case, flags, expected", [
    ("unknown task", ["--tasks", "arc_easy,mmlu"], r"Unknown task mmlu\. Known tasks: openbookqa, arc_easy, "
                                                   r"winogrande, hellaswag, arc_challenge, piqa, boolq, dolly"),
    ("limit 0", ["--limit", "0"], r"--limit must be at least 1"),
    ("missing file", ("winogrande", None), r"no winogrande\.jsonl .*validation split of allenai/winogrande "
                                           r"\(winogrande_xl\).*\"option1\""),
    ("wrong schema", ("piqa", _piqa_without_sol2()), r"piqa\.jsonl: line 2 \(task piqa\) has no field sol2\. Each "
                                                     r"document needs goal, sol1, sol2, label, as in baber/piqa"),
    ("empty file", ("boolq", "\n"), r"boolq\.jsonl is empty.*Each document needs question, passage, label"),
    ("not json", ("hellaswag", "{oops\n"), r"hellaswag\.jsonl: line 1 is not valid JSON"),
    ("bad value", ("arc_easy", _arc_with_unknown_key()), r"lm-evaluation-harness failed on the files in --task-data"),
    ("no model", ["--model", "does/not/exist/here"], r"Model folder not found"),
    ("dolly without records", ["--tasks", "dolly"], r"dolly task needs records: .* has no run_args\.json.*--data FILE"),
    ("push without card", ["--push-to-hub", "me/x", "--tasks", "boolq"], None),
])
def test_bad_input_is_a_clear_error_with_exit_2_and_nothing_written(case, flags, expected, model, task_data,
                                                                     tmp_path, capsys):
    folder = task_data
    if isinstance(flags, tuple):
        folder, flags = _broken(tmp_path, task_data, *flags), []
    if case == "push without card":
        (model / "README.md").unlink()
        expected = r"has no README\.md"
    argv = ["--model", str(model), "--task-data", str(folder), *flags]
    card_before = (model / "README.md").read_text() if (model / "README.md").exists() else None
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: ")] and "Traceback" not in err
    import re

    assert re.search(expected, err, re.S), err
    assert not (model / "eval_results.json").exists()
    assert [p.name for p in model.iterdir() if p.name.startswith(".")] == []  # no temp files left
    if card_before is not None:
        assert (model / "README.md").read_text() == card_before


def test_a_model_folder_without_a_card_still_gets_its_json_and_says_so(model, task_data, capsys):
    (model / "README.md").unlink()
    assert main(["--model", str(model), "--task-data", str(task_data), "--tasks", "winogrande"]) == 0
    assert json.loads((model / "eval_results.json").read_text())["tasks"]["winogrande"]["n"] == 8
    assert "has no model card (README.md): no card was updated" in capsys.readouterr().out
    assert not (model / "README.md").exists()
