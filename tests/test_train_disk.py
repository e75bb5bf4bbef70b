"""The disk under --output-dir, through the real `python -m train`: a read-only folder, a path under a
file and a disk without room for a checkpoint are refused before the model loads; a disk that fills
during the run is a message naming the checkpoint to --resume from, and the resumed run ends where an
uninterrupted one does.

Read-only and full disks are real: small tmpfs mounts (tests run as root, for whom chmod stops nothing).
Where mounting is not allowed those tests skip, saying so."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train_cli import data, tiny  # noqa: F401  (the same tiny model and data as the CLI tests)
from train import cli, disk
from train.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]


def _flags(tiny, data, out, *extra):
    return ["--base-model", str(tiny), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
            "--test-size", "4", "--per-device-batch-size", "4", "--warmup-steps", "0", "--lr", "1e-3",
            "--samples-per-category", "0", *extra]


def _train(*argv):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "train", *map(str, argv)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _refused(proc, *phrases):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index("error: "):]
    for phrase in phrases:
        assert phrase in message
    return message


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, read_only=False) -> a fresh tmpfs of `size` bytes; all are unmounted afterwards."""
    mounted = []

    def mount(name, size, read_only=False):
        folder = tmp_path / name
        folder.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command: the disk tests need a real small or read-only file system")
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the disk tests need root "
                        "(CAP_SYS_ADMIN) for a real full or read-only file system")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_an_output_dir_under_a_file_is_refused_before_anything_loads(tmp_path, tiny):
    """The issue's NotADirectoryError, raised after the data and the model had loaded. --data is missing:
    the error being about the output dir proves it came first."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for out in (notes / "out", notes / "out" / "deeper", notes):
        proc = _train(*_flags(tiny, tmp_path / "missing.jsonl", out, "--max-steps", "2"))
        message = _refused(proc, f"--output-dir {out}", "which is a file" if out != notes else "is a file",
                           "Give a folder")
        assert "missing.jsonl" not in message
    assert notes.read_text() == "mine\n" and os.listdir(tmp_path) == ["notes.txt"]


def test_the_write_check_leaves_nothing_behind(tmp_path, tiny, data):
    before = sorted(os.listdir(tmp_path))
    assert cli.check_output_dir(parse_args(_flags(tiny, data, tmp_path / "new" / "run"))) is None
    assert sorted(os.listdir(tmp_path)) == before, "the probe of a folder yet to be made was left behind"
    (tmp_path / "run").mkdir()
    assert cli.check_output_dir(parse_args(_flags(tiny, data, tmp_path / "run"))) is None
    assert os.listdir(tmp_path / "run") == [], "the probe file was left in --output-dir"


def test_a_read_only_output_dir_is_refused_before_anything_loads(tmp_path, tiny, tmpfs):
    """The issue's `OSError [Errno 30]` after the data and the model had loaded."""
    read_only = tmpfs("ro", 1 << 20, read_only=True)
    for out in (read_only, read_only / "run", read_only / "a" / "b"):
        proc = _train(*_flags(tiny, tmp_path / "missing.jsonl", out, "--max-steps", "2"))
        message = _refused(proc, f"Cannot write to --output-dir {out}", f"{read_only} is on a read-only file system",
                           "Pick an --output-dir")
        assert "missing.jsonl" not in message
    assert os.listdir(read_only) == []


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_the_model_loads(tiny, data, tmpfs):
    small = tmpfs("small", 1 << 20)
    out = small / "run"
    proc = _train(*_flags(tiny, data, out, "--max-steps", "2"))
    message = _refused(proc, f"--output-dir {out} is on a disk with", "free", "one checkpoint of this model",
                       "needs about", "bigger disk")
    assert not out.exists(), "the run prepared its output before refusing"
    assert "padding fraction" not in proc.stdout  # tokenizing, batching and the model come after
    free, needed = re.search(r"with ([\d.]+ \w+) free.*needs about ([\d.]+ \w+)", message).groups()
    assert free != needed


def test_a_disk_that_fills_during_the_run_names_the_checkpoint_to_resume_from(tmp_path, tiny, data, tmpfs):
    """The issue's 2 MB tmpfs ended in `RuntimeError: [enforce fail at inline_container.cc:672] unexpected
    pos`. Now: a message with the folder, the free space and the last complete checkpoint; after making
    room, --resume finishes the run with the weights and the train loss of an uninterrupted one."""
    from transformers import AutoConfig

    # Checkpoints every 2 steps, none rotated away: the disk, sized for one checkpoint and a bit, fills.
    flags = ("--max-steps", "12", "--save-steps", "2", "--logging-steps", "3", "--save-total-limit", "20")
    needed = disk.checkpoint_bytes(AutoConfig.from_pretrained(tiny), lora=False)
    whole = tmp_path / "whole"
    assert _train(*_flags(tiny, data, whole, *flags)).returncode == 0

    mount = tmpfs("disk", needed + (1 << 19))
    out = mount / "run"
    message = _refused(_train(*_flags(tiny, data, out, *flags)), f"The disk holding --output-dir {out} filled up",
                       "free", "run the same command with --resume")
    checkpoint = Path(re.search(r"The last complete checkpoint is (\S+):", message).group(1))
    assert checkpoint.parent == out and (checkpoint / "trainer_state.json").exists()
    step = int(checkpoint.name.split("-")[1])
    assert 2 <= step < 12
    # The checkpoint the full disk cut short is gone (it held the space); the complete ones stay.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in range(2, step + 1, 2)]
    assert not (out / "metrics.json").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    resumed = _train(*_flags(tiny, data, out, *flags, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint}" in resumed.stdout

    a, b = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=f"{key} differs after the resume")
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, out))
    assert mb["global_step"] == 12 and mb["train_loss"] == pytest.approx(ma["train_loss"], rel=1e-6)
