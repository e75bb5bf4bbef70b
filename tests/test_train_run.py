"""End-to-end training runs on CPU with a tiny GPT-NeoX: smoke, LoRA, and resume after kill -9."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from tests.dolly_data import make_records, write_jsonl
from tests.tiny_model import save_tiny_model
from dolly.prompt import END_KEY, SPECIAL_TOKENS, format_prompt
from train.train import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory):
    """Dolly-shaped records whose response a tiny model can learn in a few dozen steps, so the test can
    check that generation learned to stop at `### End`."""
    records = make_records(96, seed=0, chars_per_row=120)
    for record in records:
        record["response"] = "Sure, here it is."
    return write_jsonl(tmp_path_factory.mktemp("data") / "easy.jsonl", records)


def _flags(tiny, data, out, *extra):
    return ["--base-model", str(tiny), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
            "--test-size", "16", "--per-device-batch-size", "8", "--warmup-steps", "0", "--logging-steps", "5",
            "--samples-per-category", "1", "--max-new-tokens", "16", *extra]


def _generate(folder, prompt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    end_id = tokenizer.convert_tokens_to_ids(END_KEY)
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=end_id,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer, output[0, inputs["input_ids"].shape[1]:].tolist(), end_id


def test_smoke_loss_goes_down_and_output_reloads(tmp_path, tiny, easy_data, capsys):
    out = tmp_path / "out"
    assert main(_flags(tiny, easy_data, out, "--max-steps", "60", "--lr", "1e-2", "--save-steps", "30")) == 0
    printed = capsys.readouterr().out

    state = json.loads((out / "checkpoint-60" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 60 and metrics["train_records"] + metrics["eval_records"] == 96
    assert set(metrics["eval_loss"]) >= {"all", "brainstorming", "summarization"}
    assert metrics["padding_fraction"] < 0.15
    assert "padding fraction" in printed and "sample [brainstorming]" in printed
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard logs"

    tokenizer, generated, end_id = _generate(out, format_prompt("Name a river in Zürich?"))
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [len(tokenizer) - 3, len(tokenizer) - 2, len(tokenizer) - 1]
    assert generated[-1] == end_id, f"generation did not stop at ### End: {tokenizer.decode(generated)!r}"
    assert "Sure, here it is." in tokenizer.decode(generated)

    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"
    assert "brainstorming" in card.text and "### Response:" in card.text


def test_lora_output_is_a_merged_loadable_model(tmp_path, tiny, easy_data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    assert main(_flags(tiny, easy_data, out, "--max-steps", "20", "--lr", "1e-2", "--lora-r", "4",
                       "--save-steps", "100", "--samples-per-category", "0")) == 0
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_config.json").exists()  # the adapter is kept as well

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny)
    base.resize_token_embeddings(merged.get_input_embeddings().num_embeddings)
    with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.tensor([[5, 17, 42, 99, len(merged.get_input_embeddings().weight) - 1]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)
    trained = load_file(out / "model.safetensors")
    original = load_file(Path(tiny) / "model.safetensors")
    name = next(k for k in trained if k.endswith("attention.query_key_value.weight"))
    assert not torch.equal(trained[name], original[name]), "LoRA was not merged into the weights"
    card = ModelCard.load(out / "README.md")
    assert "lora" in card.data.tags


def _train_cmd(tiny, data, out, *extra):
    # Logs every 4 steps, checkpoints every 15: a checkpoint falls between two logs, so the losses of the
    # steps since the last log are only in the checkpoint's own record of the run's loss.
    return [sys.executable, "-m", "train", *_flags(tiny, data, out, "--max-steps", "180", "--lr", "1e-3",
                                                   "--save-steps", "15", "--samples-per-category", "0",
                                                   "--per-device-batch-size", "4", "--logging-steps", "4", *extra)]


def _card_train_loss(folder) -> float:
    text = ModelCard.load(Path(folder) / "README.md").text
    return float(re.search(r"\| train loss \(mean over all steps\) \| ([\d.]+) \|", text).group(1))


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, tiny, easy_data):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_cmd(tiny, easy_data, whole), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_train_cmd(tiny, easy_data, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-45" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before the kill"

    refused = subprocess.run(_train_cmd(tiny, easy_data, killed), cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # a second run may not clobber it
    resumed = subprocess.run(_train_cmd(tiny, easy_data, killed, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout

    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=f"{key} differs after resume")
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert ma["global_step"] == mb["global_step"] == 180
    assert ma["eval_loss"] == pytest.approx(mb["eval_loss"], rel=1e-5)
    # The resumed run reported the mean of its resumed steps only (3.7675 against 4.0745).
    assert mb["train_loss"] == pytest.approx(ma["train_loss"], rel=1e-6)
    assert _card_train_loss(killed) == pytest.approx(_card_train_loss(whole), abs=1.5e-4)
    assert _card_train_loss(killed) == pytest.approx(mb["train_loss"], abs=1e-4)
    logged = [{e["step"]: e["loss"] for e in json.loads((d / "checkpoint-180" / "trainer_state.json").read_text())
               ["log_history"] if "loss" in e} for d in (whole, killed)]
    assert logged[0] == pytest.approx(logged[1], rel=1e-5)  # same loss at every logged step


def test_with_the_real_pythia_tokenizer(tmp_path, easy_data):
    """Dolly-v2's ids for the markers (50277-50279) survive training and saving, and the embedding
    matrix grows to fit them."""
    from tests.tiny_model import pythia_tokenizer
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Pythia tokenizer is not in ../shared/data/pythia-tokenizer")
    base = save_tiny_model(tmp_path / "pythia-tiny", tokenizer, max_positions=512)
    out = tmp_path / "out"
    assert main(_flags(base, easy_data, out, "--max-steps", "3", "--save-steps", "100", "--samples-per-category", "0",
                       "--max-length", "512")) == 0
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.convert_tokens_to_ids(SPECIAL_TOKENS) == [50277, 50278, 50279]
    assert saved.pad_token == saved.eos_token == "<|endoftext|>"
    assert AutoConfig.from_pretrained(out).vocab_size >= 50280


def test_a_checkpoint_written_before_the_loss_record_is_read_from_its_logs(tmp_path):
    """Checkpoints of earlier versions lack the RunLoss record: their logged losses give the sum when the
    last log fell on the checkpoint's step, and nothing is made up when it did not."""
    from train.trainer import RunLoss, loss_sums

    def checkpoint(step, logs, record=None):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir(exist_ok=True)
        state = {"global_step": step, "log_history": logs,
                 "stateful_callbacks": {RunLoss.__name__: {"args": {}, "attributes": {"record": record}}} if record else {}}
        (folder / "trainer_state.json").write_text(json.dumps(state))
        return folder

    logs = [{"step": 1, "loss": 6.0}, {"step": 4, "loss": 5.0}, {"step": 8, "loss": 4.0}, {"step": 8, "eval_loss": 9.0}]
    assert loss_sums(checkpoint(8, logs)) == {"logged_sum": 6.0 + 3 * 5.0 + 4 * 4.0, "last_logged": 8, "since_log": 0.0}
    assert loss_sums(checkpoint(10, logs)) is None  # steps 9 and 10 were never logged
    record = {"step": 10, "logged_sum": 37.0, "last_logged": 8, "since_log": 7.5}
    assert loss_sums(checkpoint(10, logs, record)) == {"logged_sum": 37.0, "last_logged": 8, "since_log": 7.5}
    assert loss_sums(checkpoint(10, logs, {"step": -1})) is None  # a run that could not tell either
