"""Every bad input is a clear error before training starts (the output dir is never even created)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dolly.data import DataError
from tests.dolly_data import make_records, write_jsonl
from tests.tiny_model import save_tiny_model
from train.cli import TrainError, build_parser, parse_args
from train.train import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "dolly.jsonl", make_records(40, seed=0, chars_per_row=120))


def _fails(tmp_path, tiny, data, *flags, error=TrainError):
    out = tmp_path / "out"
    argv = ["--base-model", str(tiny), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
            "--test-size", "4", *flags]
    with pytest.raises(error) as caught:
        run(parse_args(argv))
    assert not out.exists(), "the run got as far as preparing its output before failing"
    return str(caught.value)


def test_help_explains_every_flag():
    text = build_parser().format_help()
    for flag in ("--base-model", "--data", "--categories", "--output-dir", "--epochs", "--max-steps", "--lr",
                 "--warmup-steps", "--per-device-batch-size", "--gradient-accumulation-steps", "--max-length",
                 "--test-size", "--seed", "--bf16", "--gradient-checkpointing", "--deepspeed", "--lora-r",
                 "--resume", "--overwrite", "--push-to-hub"):
        assert flag in text
    defaults = parse_args([])
    assert (defaults.base_model, defaults.data) == ("EleutherAI/pythia-12b", "databricks/databricks-dolly-15k")
    assert (defaults.lr, defaults.epochs, defaults.warmup_steps, defaults.seed) == (5e-6, 2.0, 50, 42)


def test_malformed_json_line_names_the_line(tmp_path, tiny):
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in make_records(5)]
    lines[2] = '{"instruction": "oops",'
    bad.write_text("\n".join(lines) + "\n")
    assert "line 3" in _fails(tmp_path, tiny, bad, error=DataError)


def test_missing_columns_are_named(tmp_path, tiny):
    bad = write_jsonl(tmp_path / "cols.jsonl", [{"instruction": "a", "response": "b"}])
    message = _fails(tmp_path, tiny, bad, error=DataError)
    assert "context" in message and "category" in message


def test_unknown_category_lists_the_valid_ones(tmp_path, tiny, data):
    message = _fails(tmp_path, tiny, data, "--categories", "open_qa,poetry")
    assert "poetry" in message and "brainstorming" in message and "summarization" in message


def test_empty_dataset_after_filtering(tmp_path, tiny):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "No records to train on" in _fails(tmp_path, tiny, empty)


def test_all_records_too_long(tmp_path, tiny, data):
    assert "longer than --max-length 8" in _fails(tmp_path, tiny, data, "--max-length", "8")


def test_test_size_leaving_nothing_to_train(tmp_path, tiny, data):
    assert "Lower --test-size" in _fails(tmp_path, tiny, data, "--test-size", "40")


def test_base_model_folder_not_found(tmp_path, data):
    message = _fails(tmp_path, tmp_path / "no-such-model", data)
    assert "not found" in message and "--base-model ./path/to/" in message
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    assert "no config.json" in _fails(tmp_path, not_a_model, data)


def test_hub_unreachable_shows_the_local_form_and_exits_2_without_traceback(tmp_path, data):
    """Through the real command line, offline as this machine is (HF_HUB_OFFLINE so it does not retry)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "train", "--base-model", "EleutherAI/pythia-70m", "--data", str(data),
                           "--output-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Could not load base model 'EleutherAI/pythia-70m'" in proc.stderr
    assert "--base-model ./path/to/" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    # The data's Hub id too (the default dataset), with this command's local-file form.
    proc = subprocess.run([sys.executable, "-m", "train", "--output-dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Could not load dataset 'databricks/databricks-dolly-15k'" in proc.stderr
    assert "python -m train --data path/to/" in proc.stderr
    assert not out.exists()


def test_deepspeed_config_path_and_content(tmp_path, tiny, data):
    message = _fails(tmp_path, tiny, data, "--deepspeed", str(tmp_path / "nope.json"))
    assert "DeepSpeed config not found" in message and "ds_z3_bf16.json" in message
    broken = tmp_path / "broken.json"
    broken.write_text('{"zero_optimization": {"stage": 3,}')
    assert "not valid JSON" in _fails(tmp_path, tiny, data, "--deepspeed", str(broken))
    no_gather = tmp_path / "z3.json"
    no_gather.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert "stage3_gather_16bit_weights_on_model_save" in _fails(tmp_path, tiny, data, "--deepspeed", str(no_gather))
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16}))
    assert "train_micro_batch_size_per_gpu = 16" in _fails(tmp_path, tiny, data, "--deepspeed", str(fixed),
                                                           "--per-device-batch-size", "4")


def test_shipped_deepspeed_configs_pass_the_checks():
    for name in ("ds_z3_bf16.json", "ds_z3_offload.json", "ds_z3_fp16.json"):
        args = parse_args(["--deepspeed", name])  # a bare name is found in train/configs/
        from train.cli import check_flags

        check_flags(args)
        config = json.loads(Path(args.deepspeed).read_text())
        assert config["train_micro_batch_size_per_gpu"] == "auto"
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_batch_sizes_that_do_not_divide(tmp_path, tiny, data):
    message = _fails(tmp_path, tiny, data, "--per-device-batch-size", "3", "--global-batch-size", "16")
    assert "not a multiple of per-device batch size 3" in message
    message = _fails(tmp_path, tiny, data, "--per-device-batch-size", "4", "--global-batch-size", "16",
                     "--gradient-accumulation-steps", "2")
    assert "needs --gradient-accumulation-steps 4" in message
    assert "at least 1" in _fails(tmp_path, tiny, data, "--per-device-batch-size", "0")


def test_max_length_beyond_the_model_window(tmp_path, tiny, data):
    assert "context window of 256" in _fails(tmp_path, tiny, data, "--max-length", "512")

