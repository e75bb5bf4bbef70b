"""Model card metadata, and --push-to-hub against a fake Hub at the HTTP boundary (HF_ENDPOINT)."""
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import ModelCard

from tests.dolly_data import make_records, write_jsonl
from tests.fake_hub import FakeHub
from tests.tiny_model import save_tiny_model
from train.card import build_card
from train.cli import TrainError, parse_args
from train.hub import push

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_fakeSECRETtoken1234567890"


def test_model_card_metadata_parses(tmp_path):
    args = parse_args(["--base-model", "EleutherAI/pythia-2.8b", "--lora-r", "8", "--lora-alpha", "16",
                       "--push-to-hub", "me/dolly-v2-3b"])
    args.gradient_accumulation_steps, args.global_batch_size = 1, 8
    card = build_card(args, eval_losses={"all": 1.5, "open_qa": 1.25}, train_loss=1.75, n_train=14000, n_eval=1000,
                      dropped={"summarization": 3}, padding=0.021,
                      samples={"open_qa": [("Why is the sky blue?", "Rayleigh scattering.")]})
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.license == "mit" and data.base_model == "EleutherAI/pythia-2.8b"
    assert data.datasets == ["databricks/databricks-dolly-15k"] and data.language == ["en"]
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert {"dolly", "pythia", "lora"} <= set(data.tags)
    for text in ("### Instruction:", "### Response:", "### End", "| open_qa | 1.2500 |", "summarization: 3",
                 "python app.py --model me/dolly-v2-3b", "Rayleigh scattering.", "r=8, alpha=16"):
        assert text in loaded.text


def test_model_card_leaves_local_paths_out_of_hub_metadata(tmp_path):
    args = parse_args(["--base-model", str(tmp_path), "--data", str(tmp_path / "d.jsonl")])
    args.gradient_accumulation_steps, args.global_batch_size = 1, 8
    card = build_card(args, eval_losses={}, train_loss=None, n_train=1, n_eval=0, dropped={}, padding=0.0)
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model is None and data.datasets is None and data.pipeline_tag == "text-generation"


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / "optimizer.pt").write_bytes(b"big")
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(os.urandom(4096))
    return out


def test_push_uploads_the_folder_without_checkpoints(folder, monkeypatch, capsys):
    with FakeHub(TOKEN) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        url = push(str(folder), "me/dolly", private=True)
    assert url.endswith("/me/dolly") and hub.repos["me/dolly"]["visibility"] == "private"
    assert set(hub.files["me/dolly"]) == {"config.json", "model.safetensors"}
    assert hub.files["me/dolly"]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_push_refused_or_offline_or_no_token_is_a_clear_error(folder, monkeypatch, capsys):
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(TOKEN, refuse=True) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(TrainError, match="refused the token.*HTTP 401.*safe in"):
            push(str(folder), "me/dolly")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TrainError, match="Could not reach the Hugging Face Hub.*hf upload me/dolly"):
        push(str(folder), "me/dolly")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(folder / "no-token-file"))
    with pytest.raises(TrainError, match="set HF_TOKEN or run `hf auth login`"):
        push(str(folder), "me/dolly")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing lost
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def _train(tmp_path, hub_url, repo):
    model = save_tiny_model(tmp_path / "tiny", max_positions=256)
    data = write_jsonl(tmp_path / "d.jsonl", make_records(40, seed=1, chars_per_row=100))
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "train", "--base-model", str(model), "--data", str(data), "--output-dir", str(out),
           "--max-length", "256", "--test-size", "8", "--per-device-batch-size", "4", "--max-steps", "4",
           "--save-steps", "2", "--warmup-steps", "0", "--samples-per-category", "1", "--max-new-tokens", "4",
           "--push-to-hub", repo]
    return out, subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_train_and_push_end_to_end(tmp_path):
    with FakeHub(TOKEN) as hub:
        out, proc = _train(tmp_path, hub.url, "me/tiny-dolly")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout + proc.stderr
    uploaded = hub.files["me/tiny-dolly"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(uploaded)
    assert not any(name.startswith("checkpoint-") for name in uploaded)
    assert uploaded["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert "pushed:" in proc.stdout
    assert hub.validated and "pipeline_tag: text-generation" in hub.validated[0]


def test_push_refused_keeps_the_local_output_whole(tmp_path):
    with FakeHub(TOKEN, refuse=True) as hub:
        out, proc = _train(tmp_path, hub.url, "me/tiny-dolly")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refused the token" in proc.stderr and f"safe in {out}" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    assert ModelCard.load(out / "README.md").data.pipeline_tag == "text-generation"
