"""Real DeepSpeed on CPU: ZeRO-2 and ZeRO-3, one process and two processes under torchrun.

The shipped configs (train/configs/) are for GPUs; these runs use small CPU configs of the same
shape ("auto" batch fields filled by Trainer, ZeRO-3 gathering 16-bit weights on save).
DeepSpeed compiles its CPU communication op on first use (~1 min, cached in ~/.cache/torch_extensions).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import free_port
from tests.dolly_data import make_records, write_jsonl
from tests.tiny_model import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PER_DEVICE, STEPS = 4, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    model = save_tiny_model(root / "tiny", max_positions=256)
    data = write_jsonl(root / "dolly.jsonl", make_records(72, seed=2, chars_per_row=120))
    return model, data, root


def _config(root: Path, stage: int) -> Path:
    zero = {"stage": stage}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    path = root / f"cpu_z{stage}.json"
    path.write_text(json.dumps({
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # Trainer's torch AdamW, no compiled DeepSpeed Adam on CPU
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    }))
    return path


@pytest.mark.parametrize("stage,procs,launcher", [(2, 1, None), (3, 1, None), (2, 2, "torchrun"), (3, 2, "torchrun"),
                                                  (3, 2, "deepspeed")],
                         ids=["z2-1proc", "z3-1proc", "z2-torchrun2", "z3-torchrun2", "z3-deepspeed-launcher2"])
def test_deepspeed_on_cpu(setup, stage, procs, launcher):
    model, data, root = setup
    out = root / f"out-z{stage}-{procs}-{launcher}"
    flags = ["--base-model", str(model), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
             "--test-size", "8", "--per-device-batch-size", str(PER_DEVICE), "--max-steps", str(STEPS),
             "--save-steps", "2", "--lr", "3e-3", "--warmup-steps", "0", "--logging-steps", "1",
             "--samples-per-category", "1", "--max-new-tokens", "4", "--deepspeed", str(_config(root, stage))]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    if launcher is None:
        cmd = [sys.executable, "-m", "train", *flags]
    elif launcher == "deepspeed":  # passes --local_rank=N to each process
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(procs),
               "--master_port", str(free_port()), "--module", "train", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(free_port()), "-m", "train", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Each optimizer step consumed per-device batch x processes records: the ranks trained together
    # (without use_cpu=True each rank would silently train alone on the whole data).
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert state["epoch"] == pytest.approx(STEPS / -(-metrics["train_records"] // (PER_DEVICE * procs)))
    assert (out / f"checkpoint-{STEPS}" / f"global_step{STEPS}").is_dir()  # DeepSpeed's own checkpoint

    # The saved model is plain safetensors holding real (gathered) trained weights, and it loads.
    from transformers import AutoModelForCausalLM

    trained, initial = load_file(out / "model.safetensors"), load_file(Path(model) / "model.safetensors")
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    assert trained[name].shape == initial[name].shape and trained[name].abs().sum() > 0
    assert not torch.equal(trained[name].float(), initial[name].float())
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded(torch.tensor([[1, 2, 3]])).logits.shape[-1] == reloaded.get_input_embeddings().num_embeddings
    assert "sample [" in proc.stdout and "eval loss: all" in proc.stdout
