"""Training never destroys what it did not write, and every problem with the flags surfaces before the
first training step.

Each refusal is checked against the user's files byte for byte. The pre-flight checks point --data at a
file that does not exist: the error being about the flag (not the data) proves it came before any data
or model loaded."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from tests.test_train_cli import data, tiny  # noqa: F401  (the same tiny model and data as the CLI tests)
from train import cli
from train.cli import MANIFEST_FILE, TrainError, parse_args
from train.train import main, run

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_fakeSECRETtoken0987654321"


def _flags(tiny, data, out, *extra):
    return ["--base-model", str(tiny), "--data", str(data), "--output-dir", str(out), "--max-length", "256",
            "--test-size", "4", "--per-device-batch-size", "4", "--max-steps", "2", "--save-steps", "1",
            "--warmup-steps", "0", "--samples-per-category", "0", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny, data):
    """A complete run of ours (checkpoints, model, card); tests work on copies of it."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert main(_flags(tiny, data, out)) == 0
    return out


def _copy(run_dir, to):
    return Path(shutil.copytree(run_dir, to, symlinks=True))


def snapshot(folder) -> dict:
    """Every file's bytes and every folder, by path relative to `folder`."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "<dir>") for p in sorted(folder.rglob("*"))}


def _user_folder(folder) -> Path:
    """A folder of someone's own work, with a subfolder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes, not a backup anywhere\n")
    (folder / "README.md").write_text("# my project\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    (folder / "sub").mkdir()
    (folder / "sub" / "results.csv").write_bytes(os.urandom(256))
    return folder


def _refused(argv, match):
    with pytest.raises(TrainError, match=match) as caught:
        run(parse_args(argv))
    return str(caught.value)


# 1. Never destroys what it did not write -------------------------------------------------------------

def test_overwrite_of_the_current_folder_is_refused_through_the_real_command(tmp_path, tiny, data):
    """The issue's `--output-dir . --overwrite`, which emptied the current folder."""
    work = _user_folder(tmp_path / "work")
    before = snapshot(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "train", *_flags(tiny, data, ".", "--overwrite")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--output-dir . is the current folder" in proc.stderr and "folder of its own" in proc.stderr
    assert snapshot(work) == before


@pytest.mark.parametrize("flag", ["--overwrite", "--resume", None])
def test_home_root_parents_and_the_project_are_never_an_output_dir(tmp_path, tiny, data, monkeypatch, flag):
    home = _user_folder(tmp_path / "home")
    work = _user_folder(home / "work")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    before = snapshot(home)
    extra = [flag] if flag else []
    assert "your home folder" in _refused(_flags(tiny, data, "~", *extra), "folder of its own")
    assert "your home folder" in _refused(_flags(tiny, data, str(home), *extra), "folder of its own")
    assert "the current folder" in _refused(_flags(tiny, data, ".", *extra), "folder of its own")
    assert "holds the current folder" in _refused(_flags(tiny, data, "../..", *extra), "folder of its own")
    assert "holds the current folder" in _refused(_flags(tiny, data, "/", *extra), "folder of its own")
    assert "open Dolly's own folder" in _refused(_flags(tiny, data, str(ROOT), *extra), "folder of its own")
    assert snapshot(home) == before
    assert not (ROOT / MANIFEST_FILE).exists() and not (ROOT / "run_args.json").exists()


def test_a_folder_holding_the_data_or_the_base_model_is_refused(tmp_path, tiny, data, finished_run):
    """The issue's `--output-dir u --data u/mydata.jsonl --overwrite`, which deleted the data itself."""
    user = _user_folder(tmp_path / "u")
    shutil.copy(data, user / "mydata.jsonl")
    before = snapshot(user)
    for extra in (["--overwrite"], ["--resume"], []):
        message = _refused(["--base-model", str(tiny), "--data", str(user / "mydata.jsonl"), "--output-dir",
                            str(user), *extra], "folder of its own")
        assert f"where --data {user / 'mydata.jsonl'} is" in message
        message = _refused(["--base-model", str(tiny), "--data", str(user / "sub" / "results.csv"),
                            "--output-dir", str(user), *extra], "where --data")
    assert snapshot(user) == before

    # Training on from a finished run into the same folder would delete (or write over) its own base model.
    previous = _copy(finished_run, tmp_path / "dolly-out")
    before = snapshot(previous)
    for base in (previous, previous / "checkpoint-2"):
        for extra in (["--overwrite"], ["--resume"]):
            assert "where --base-model" in _refused(_flags(base, data, previous, *extra), "folder of its own")
    assert snapshot(previous) == before


def test_overwrite_deletes_only_an_earlier_runs_files(tmp_path, tiny, data, finished_run):
    out = _copy(finished_run, tmp_path / "out")
    assert {"checkpoint-1", "checkpoint-2", "model.safetensors", "README.md", "runs"} <= set(os.listdir(out))
    (out / "my-notes.txt").write_text("results of the run, by hand\n")
    (out / "plots").mkdir()
    (out / "plots" / "loss.png").write_bytes(os.urandom(64))
    before = snapshot(out)
    message = _refused(_flags(tiny, data, out, "--overwrite"), "did not write")
    assert "my-notes.txt" in message and "plots/" in message and "model.safetensors" not in message
    assert snapshot(out) == before, "a refused --overwrite touched the folder"

    # Many foreign files: a few are named, the rest counted.
    for i in range(7):
        (out / f"extra-{i}.txt").write_text(str(i))
    assert "and 4 more" in _refused(_flags(tiny, data, out, "--overwrite"), "did not write")
    for i in range(7):
        (out / f"extra-{i}.txt").unlink()

    # Once the user's files are gone, --overwrite replaces the old run: its checkpoints do not linger.
    (out / "my-notes.txt").unlink()
    shutil.rmtree(out / "plots")
    assert main(_flags(tiny, data, out, "--overwrite", "--max-steps", "3", "--save-steps", "3")) == 0
    names = set(os.listdir(out))
    assert "checkpoint-3" in names and not {"checkpoint-1", "checkpoint-2"} & names
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3


def test_resume_or_a_plain_run_in_a_folder_without_a_run_is_refused(tmp_path, tiny, data):
    """The issue's `--resume` that replaced the user's own README.md and config.json."""
    user = _user_folder(tmp_path / "mine")
    (user / "run_args.json").write_text('{"seed": 42}\n')  # looks like a run, but nothing marks it as ours
    before = snapshot(user)
    for extra in (["--resume"], [], ["--overwrite"]):
        message = _refused(_flags(tiny, data, user, *extra), "did not write")
        assert "README.md" in message and "config.json" in message and "sub/" in message
    assert snapshot(user) == before


def test_resume_refuses_foreign_files_and_changed_flags(tmp_path, tiny, data, finished_run):
    out = _copy(finished_run, tmp_path / "out")
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    assert "notes.txt" in _refused(_flags(tiny, data, out, "--resume"), "did not write")
    assert "notes.txt" in _refused(_flags(tiny, data, out), "did not write")
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    before = snapshot(out)
    _refused(_flags(tiny, data, out), "already holds a run.*--resume.*--overwrite")
    _refused(_flags(tiny, data, out, "--resume", "--seed", "2"), "--seed was 42, now 2")
    _refused(_flags(tiny, data, out, "--resume", "--overwrite"), "pick one")
    assert snapshot(out) == before


def test_the_manifest_names_exactly_what_the_run_left(finished_run):
    listed = json.loads((finished_run / MANIFEST_FILE).read_text())["files"]
    assert set(listed) == set(os.listdir(finished_run)) - {MANIFEST_FILE}
    assert {"run_args.json", "runs", "checkpoint-1", "checkpoint-2", "config.json", "model.safetensors",
            "tokenizer.json", "metrics.json", "README.md"} <= set(listed)


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_the_retry(tmp_path, tiny, data):
    broken = Path(shutil.copytree(tiny, tmp_path / "model"))
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(b"not safetensors")  # fails when the weights load
    out = tmp_path / "out"
    argv = _flags(broken, data, out)
    with pytest.raises(Exception) as caught:
        main(argv)
    assert not isinstance(caught.value, TrainError)  # it got past every check, as far as loading the model
    assert (out / "run_args.json").exists() and not list(out.glob("checkpoint-*"))

    (broken / "model.safetensors").write_bytes(weights)
    assert main(argv) == 0, "the same command did not run again"
    assert (out / "checkpoint-2" / "trainer_state.json").exists()

    # A checkpoint that a kill cut short (no trainer_state.json) is nothing to keep either.
    stub = tmp_path / "stub"
    cli.claim(stub, ["run_args.json", "runs", "checkpoint-1"])
    (stub / "checkpoint-1").mkdir()
    (stub / "checkpoint-1" / "model.safetensors").write_bytes(b"half")
    assert cli.check_output_dir(parse_args(_flags(tiny, data, stub))) is None
    assert cli.check_output_dir(parse_args(_flags(tiny, data, stub, "--resume"))) is None


# 2. Every problem with the flags before the first step ---------------------------------------------

def _preflight(tmp_path, tiny, *extra, match):
    """Fails on the flags, before the (missing) data loads; the output dir is never made."""
    out = tmp_path / "out"
    message = _refused(_flags(tiny, tmp_path / "no-such-data.jsonl", out, *extra), match)
    assert not out.exists()
    return message


@pytest.mark.parametrize("repo", ["bad repo id!!", "a/b/c", "me/", "me/-dolly"])
def test_bad_repo_id_is_refused_before_training(tmp_path, tiny, monkeypatch, repo):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    message = _preflight(tmp_path, tiny, "--push-to-hub", repo, match="is not a Hub repo id")
    assert repr(repo) in message and "owner/name" in message and SECRET not in message


def test_push_without_a_token_is_refused_before_training(tmp_path, tiny, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    _preflight(tmp_path, tiny, "--push-to-hub", "me/dolly", match="No Hugging Face token.*HF_TOKEN.*hf auth login")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(Exception) as caught:  # with a token the checks pass, and the missing data is next
        run(parse_args(_flags(tiny, tmp_path / "no-such-data.jsonl", tmp_path / "out", "--push-to-hub", "me/dolly")))
    assert "no-such-data.jsonl" in str(caught.value) and SECRET not in str(caught.value)


def test_push_checks_through_the_real_command(tmp_path, tiny):
    """No token: exit 2 at once, without a traceback, before the (real) data and model load."""
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "train", "--base-model", str(tiny), "--data", str(tmp_path / "missing.jsonl"),
           "--output-dir", str(out), "--push-to-hub"]
    proc = subprocess.run(cmd + ["me/dolly"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "No Hugging Face token" in proc.stderr and "missing.jsonl" not in proc.stderr
    proc = subprocess.run(cmd + ["bad repo id!!"], cwd=ROOT, env={**env, "HF_TOKEN": SECRET}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "'bad repo id!!' is not a Hub repo id" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert not out.exists()


def test_deepspeed_config_that_is_a_folder_or_not_json(tmp_path, tiny):
    assert "is a folder" in _preflight(tmp_path, tiny, "--deepspeed", str(tmp_path), match="--deepspeed")
    (tmp_path / "ds.json").write_bytes(b"\xff\xfe not text")
    _preflight(tmp_path, tiny, "--deepspeed", str(tmp_path / "ds.json"), match="not valid JSON")
    (tmp_path / "ds.json").write_text("[1, 2]")
    _preflight(tmp_path, tiny, "--deepspeed", str(tmp_path / "ds.json"), match="must be a JSON object")


@pytest.mark.parametrize("package, flags", [("tensorboard", []), ("deepspeed", ["--deepspeed", "ds_z3_bf16.json"]),
                                             ("peft", ["--lora-r", "4"])])
def test_missing_optional_package_is_named_with_the_fix(tmp_path, tiny, monkeypatch, package, flags):
    # None in sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(sys.modules, package, None)
    message = _preflight(tmp_path, tiny, *flags, match="pip install -r requirements-train.txt")
    assert f"needs {package} (for " in message


def test_missing_tensorboard_through_the_real_command(tmp_path, tiny, data):
    """The issue's missing tensorboard (installed with the app's requirements only) died in a traceback."""
    out = tmp_path / "out"
    code = "import sys; sys.modules['tensorboard'] = None; from train.train import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, *_flags(tiny, data, out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs tensorboard" in proc.stderr and "pip install -r requirements-train.txt" in proc.stderr
    assert not out.exists()


def test_failed_push_suggests_a_shell_quoted_upload(tmp_path, monkeypatch):
    from train.hub import push

    folder = tmp_path / "my dolly; rm -rf ~ $(x)"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TrainError) as caught:
        push(str(folder), "me/dolly", private=True)
    message = str(caught.value)
    command = message[message.index("`hf upload") + 1:message.rindex("`")]
    argv = shlex.split(command)
    assert argv[:4] == ["hf", "upload", "me/dolly", str(folder)] and argv[-1] == "--private"
    assert "checkpoint-*/**" in argv and SECRET not in message
