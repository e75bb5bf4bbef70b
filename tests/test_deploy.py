"""Hugging Face Spaces: `python -m space.deploy` against a fake Hub at the HTTP boundary, the README's
Space front matter, and ZeroGPU (detection, nothing imported elsewhere, the generation plumbing)."""
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import SpaceHardware
from huggingface_hub.repocard import metadata_load

from space.deploy import DeployError, app_files, app_packages, deploy, main
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_fakeSECRETdeploytoken1234567"


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """HF_TOKEN set, no saved login, the Hub client pointed at nothing until a test starts a FakeHub."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def test_the_app_needs_its_own_packages_only():
    assert app_packages() == ["dolly", "explorer", "space"]
    files = app_files()
    assert {"app.py", "requirements.txt", "README.md", "space/model.py", "explorer/tab.py", "dolly/prompt.py"} <= set(files)
    assert not [f for f in files if f.split("/")[0] in ("tests", "train", "bench", ".venv", "outputs")]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_deploy_creates_the_space_uploads_the_app_and_sets_variables(hub_env, capsys):
    with FakeHub(TOKEN) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        url = deploy("me/open-dolly", private=True, hardware="zero-a10g", model="databricks/dolly-v2-7b",
                     data="me/my-dolly-data")
    repo = hub.repos["me/open-dolly"]
    assert repo["type"] == "space" and repo["sdk"] == "gradio" and repo["visibility"] == "private"
    assert url.endswith("me/open-dolly")
    uploaded = hub.files["me/open-dolly"]
    assert set(uploaded) == set(app_files())
    for name in ("app.py", "space/chat.py", "requirements.txt", "README.md"):
        assert uploaded[name] == (ROOT / name).read_bytes()
    assert hub.variables["me/open-dolly"] == {"DOLLY_MODEL": "databricks/dolly-v2-7b", "DOLLY_DATA": "me/my-dolly-data"}
    assert hub.hardware["me/open-dolly"] == "zero-a10g"
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err and "Deployed:" in captured.out


def test_deploy_again_updates_without_variables_it_was_not_given(hub_env):
    with FakeHub(TOKEN) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        deploy("me/open-dolly", log=lambda *a: None)
        deploy("me/open-dolly", log=lambda *a: None)
    assert set(hub.files["me/open-dolly"]) == set(app_files())
    assert "me/open-dolly" not in hub.variables and "me/open-dolly" not in hub.hardware


def _nothing_sent(hub):
    """No request that creates or changes anything (the token check is a GET)."""
    return [r for r in hub.requests if r[0] != "GET"] == []


@pytest.mark.parametrize("space_id, message", [
    ("open dolly", "is not a Space id"),
    ("me/open/dolly", "is not a Space id"),
    ("open-dolly", "is not a Space id.*owner/name"),
])
def test_a_bad_space_id_is_refused_before_anything_is_sent(hub_env, space_id, message):
    with FakeHub(TOKEN) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(DeployError, match=message):
            deploy(space_id, log=lambda *a: None)
    assert hub.requests == []


def test_no_token_refused_token_or_read_only_token_is_a_clear_error_before_upload(hub_env, capsys):
    hub_env.delenv("HF_TOKEN")
    with FakeHub(TOKEN) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(DeployError, match="No Hugging Face token: set HF_TOKEN .* or run `hf auth login`"):
            deploy("me/open-dolly", log=lambda *a: None)
    assert hub.requests == []
    hub_env.setenv("HF_TOKEN", TOKEN)
    with FakeHub(TOKEN, refuse=True) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(DeployError, match="refused the token \\(HTTP 401\\) while checking the token "
                                              "\\(nothing was uploaded\\)"):
            deploy("me/open-dolly", log=lambda *a: None)
    assert _nothing_sent(hub) and hub.files == {} and hub.repos == {}
    with FakeHub(TOKEN, role="read") as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(DeployError, match="read-only; deploying needs a write token"):
            deploy("me/open-dolly", log=lambda *a: None)
    assert _nothing_sent(hub)
    hub_env.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DeployError, match="could not reach the Hugging Face Hub while checking the token"):
        deploy("me/open-dolly", log=lambda *a: None)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_bad_hardware_or_local_paths_are_refused_before_anything_is_sent(hub_env, tmp_path):
    with FakeHub(TOKEN) as hub:
        hub_env.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(DeployError, match="Unknown --hardware 'a100': use one of cpu-basic, cpu-upgrade"):
            deploy("me/open-dolly", hardware="a100")
        with pytest.raises(DeployError, match="--model './my-dolly' is not a Hub id .*cannot read this machine's files"):
            deploy("me/open-dolly", model="./my-dolly")
        with pytest.raises(DeployError, match="--data .* is not a Hub id"):
            deploy("me/open-dolly", data=str(tmp_path / "dolly.jsonl"))
    assert hub.requests == []


def test_command_line_deploys_and_reports_errors_without_a_traceback(tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    with FakeHub(TOKEN) as hub:
        env["HF_ENDPOINT"] = hub.url
        ok = subprocess.run([sys.executable, "-m", "space.deploy", "me/open-dolly", "--model", "me/dolly-v2-2.8b"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        bad = subprocess.run([sys.executable, "-m", "space.deploy", "me/open-dolly", "--hardware", "gpu"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "Deployed:" in ok.stdout and set(hub.files["me/open-dolly"]) == set(app_files())
    assert hub.variables["me/open-dolly"] == {"DOLLY_MODEL": "me/dolly-v2-2.8b"}
    assert bad.returncode == 1 and "space.deploy: Unknown --hardware 'gpu'" in bad.stderr
    assert "Traceback" not in bad.stderr and TOKEN not in ok.stdout + ok.stderr + bad.stdout + bad.stderr
    assert main(["not a space"]) == 1


def test_readme_front_matter_configures_the_space():
    meta = metadata_load(ROOT / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["suggested_hardware"] in {h.value for h in SpaceHardware}
    requirements = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={meta['sdk_version']}" in requirements


# --- ZeroGPU -----------------------------------------------------------------------------------------

def test_zero_gpu_is_detected_only_with_the_env_and_the_package():
    from importlib.util import find_spec

    from space import zerogpu

    assert not zerogpu.detect({})
    assert not zerogpu.detect({"SPACES_ZERO_GPU": "false"})
    assert zerogpu.detect({"SPACES_ZERO_GPU": "true"}) == (find_spec("spaces") is not None)
    assert zerogpu.detect({"SPACES_ZERO_GPU": "1"}) == zerogpu.detect({"SPACES_ZERO_GPU": "True"})


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("spaces") is not None,
                    reason="the `spaces` package is installed here")
def test_without_the_spaces_package_nothing_changes_even_on_a_zero_gpu_env():
    code = ("import sys, app, space.chat, space.model, space.tab; from space import zerogpu; "
            "print(zerogpu.ACTIVE, zerogpu.runs_here(), 'spaces' in sys.modules)")
    for value in ("", "true"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "SPACES_ZERO_GPU": value})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-3:] == ["False", "True", "False"]


def test_generation_through_the_zero_gpu_plumbing_matches_and_stops(tmp_path, monkeypatch):
    """What runs inside spaces.GPU, with the wrapper `spaces.GPU` is off ZeroGPU (the function as it
    is): the same text, usage carried back, arguments ZeroGPU can pickle, and Stop honoured."""
    from space import zerogpu
    from space.chat import build_prompt, stream_reply, validate_settings
    from space.model import load_model
    from tests.tiny_model import save_scripted_model

    monkeypatch.setattr(zerogpu, "_in_worker", False)
    lm = load_model(str(save_scripted_model(tmp_path / "m", " The capital of France is Paris.")))
    ids = build_prompt(lm.tokenizer, "What is the capital?").input_ids
    settings = validate_settings(do_sample=False, max_new_tokens=40)
    pickle.dumps((stream_reply, id(lm), (list(ids), settings, None, 0)))  # what ZeroGPU sends its worker
    usage, direct_usage = {}, {}
    through = list(zerogpu.stream(stream_reply, lm, ids, settings, usage=usage, gpu=zerogpu._generate))
    direct = list(stream_reply(lm, ids, settings, usage=direct_usage))
    assert through == direct and through[-1] == "The capital of France is Paris."
    assert usage == direct_usage and usage["finish_reason"] == "stop"
    stop = threading.Event()
    stopped = zerogpu.stream(stream_reply, lm, ids, settings, stop=stop, gpu=zerogpu._generate)
    first = next(stopped)
    stop.set()
    assert list(stopped) == [] and first == direct[0]
