"""Publish this app as a Hugging Face Space: `python -m space.deploy SPACE_ID`.

    python -m space.deploy you/open-dolly
    python -m space.deploy you/open-dolly --private --hardware zero-a10g --model databricks/dolly-v2-7b
    python -m space.deploy you/open-dolly --model you/dolly-v2-2.8b --data you/my-dolly-data

Creates the Space (Gradio SDK) or updates it, uploads what the app needs and nothing else (app.py,
the packages it imports, requirements.txt, README.md whose front matter configures the Space), and
sets DOLLY_MODEL / DOLLY_DATA as Space variables, which the app reads like its flags. The token
comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed. Everything that can be
checked is checked before anything is created or uploaded: the Space id, the hardware name, a
token, and that the Hub accepts it.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from dolly.source import hub_id

ROOT = Path(__file__).resolve().parents[1]
# The files at the top of the repository that make a Space, beside app.py's packages.
TOP_FILES = ("app.py", "requirements.txt", "README.md")


class DeployError(RuntimeError):
    """Deployment cannot go on; the message says why and what to do."""


def app_packages(root: Path = ROOT) -> list[str]:
    """The repository's own packages that app.py imports, directly or through each other (read from
    the code, so a new package the app starts to use is deployed too, and train/, tests/ never are)."""
    local = {p.parent.name for p in root.glob("*/__init__.py")}
    found, todo = set(), [root / "app.py"]
    while todo:
        tree = ast.parse(todo.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in local and top not in found:
                    found.add(top)
                    todo.extend(sorted((root / top).rglob("*.py")))
    return sorted(found)


def app_files(root: Path = ROOT) -> list[str]:
    """Every file the Space gets, relative to `root`: the top files, then each package's files
    (no caches, no hidden files)."""
    files = list(TOP_FILES)
    for package in app_packages(root):
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc" \
                    and not any(part.startswith(".") for part in rel.parts):
                files.append(rel.as_posix())
    return files


def check_space_id(space_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    space_id = (space_id or "").strip()
    try:
        validate_repo_id(space_id)
        if space_id.count("/") != 1:
            raise HFValidationError("it must be owner/name")
    except HFValidationError as error:
        raise DeployError(f"{space_id!r} is not a Space id: {error} Give owner/name, e.g. "
                          "`python -m space.deploy you/open-dolly`.") from None
    return space_id


def check_hardware(hardware: str | None) -> str | None:
    from huggingface_hub import SpaceHardware

    if hardware is None:
        return None
    names = [h.value for h in SpaceHardware]
    if hardware not in names:
        raise DeployError(f"Unknown --hardware {hardware!r}: use one of {', '.join(names)}.")
    return hardware


def _hub_error(error, space_id: str, token: str | None, step: str) -> DeployError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    text = (str(error).splitlines() or [""])[0]
    if token:
        text = text.replace(token, "***")
    if status in (401, 403):
        why = (f"the Hub refused the token (HTTP {status}) while {step}: it needs write access to {space_id}. "
               "Set HF_TOKEN to a write token, or run `hf auth login`.")
    elif status is not None:
        why = f"the Hub answered HTTP {status} while {step}: {text}"
    else:
        why = f"could not reach the Hugging Face Hub while {step} ({type(error).__name__}: {text})"
    return DeployError(f"Could not deploy {space_id}: {why}")


def deploy(space_id: str, *, private: bool = False, hardware: str | None = None, model: str | None = None,
           data: str | None = None, root: Path = ROOT, log=print) -> str:
    """Create or update the Space and upload the app; return its URL. Raises DeployError."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    space_id = check_space_id(space_id)
    hardware = check_hardware(hardware)
    for flag, value in (("--model", model), ("--data", data)):
        if value and hub_id(value) is None:
            raise DeployError(f"{flag} {value!r} is not a Hub id (owner/name): the Space downloads it from the Hub "
                              f"and cannot read this machine's files. Push it first (python -m train --push-to-hub "
                              f"for a model), then pass its id.")
    for name in TOP_FILES:
        if not (root / name).is_file():
            raise DeployError(f"{root / name} is missing: run this from a complete checkout of open Dolly.")
    token = get_token()
    if not token:
        raise DeployError("No Hugging Face token: set HF_TOKEN (a write token) or run `hf auth login`. "
                          "Nothing was created or uploaded.")
    api = HfApi(token=token)
    try:
        who = api.whoami()
    except Exception as error:  # 401, connection refused, DNS, offline mode
        raise _hub_error(error, space_id, token, "checking the token (nothing was uploaded)") from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise DeployError(f"The token of {who.get('name', 'this login')} is read-only; deploying needs a write token "
                          "(HF_TOKEN, or `hf auth login`). Nothing was created or uploaded.")
    files = app_files(root)
    step = "creating the Space"
    try:
        url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        for key, value in (("DOLLY_MODEL", model), ("DOLLY_DATA", data)):
            if value:
                step = f"setting the Space variable {key}"
                api.add_space_variable(space_id, key, value)
        step = "uploading the app"
        log(f"Uploading {len(files)} files ({', '.join(TOP_FILES + tuple(app_packages(root)))}) to {space_id} ...")
        # One commit of exactly these files: listing them here, not filtering a folder walk, keeps
        # virtual environments, checkpoints and caches beside the code out by construction.
        api.create_commit(space_id, repo_type="space", commit_message="Deploy open Dolly (python -m space.deploy)",
                          operations=[CommitOperationAdd(name, str(root / name)) for name in files])
        if hardware:
            step = f"requesting {hardware} hardware"
            api.request_space_hardware(space_id, hardware)
    except Exception as error:
        raise _hub_error(error, space_id, token, step) from None
    log(f"Deployed: {url}" + (f" (hardware {hardware} requested)" if hardware else ""))
    return str(url)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m space.deploy",
        description="Create or update a Hugging Face Space running this app (token: HF_TOKEN or `hf auth login`).")
    parser.add_argument("space_id", metavar="SPACE_ID", help="owner/name of the Space, e.g. you/open-dolly")
    parser.add_argument("--private", action="store_true", help="make the Space private (when it is created)")
    parser.add_argument("--hardware", help="request this hardware, e.g. cpu-upgrade, t4-small, zero-a10g (ZeroGPU)")
    parser.add_argument("--model", help="the chat model the Space runs (Space variable DOLLY_MODEL), a Hub id")
    parser.add_argument("--data", help="the Explorer's dataset (Space variable DOLLY_DATA), a Hub id")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        deploy(args.space_id, private=args.private, hardware=args.hardware, model=args.model, data=args.data)
    except DeployError as error:
        print(f"space.deploy: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
