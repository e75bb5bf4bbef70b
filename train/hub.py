"""`--push-to-hub`: upload the output folder with huggingface_hub. The token comes from HF_TOKEN or
the login cache (huggingface_hub's own lookup) and is never printed."""
import shlex
from contextlib import contextmanager

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from train.cli import MANIFEST_FILE, MANIFEST_TMP, RUN_ARGS_FILE, TrainError

# Checkpoints hold optimizer states (several times the model) and are for --resume, not for users;
# the run's bookkeeping is for this machine only.
IGNORE = ["checkpoint-*/", "checkpoint-*/**", RUN_ARGS_FILE, MANIFEST_FILE, MANIFEST_TMP]
NO_TOKEN = "No Hugging Face token for --push-to-hub: set HF_TOKEN or run `hf auth login`."


def check_push(repo_id: str) -> None:
    """Before training: a repo id the Hub accepts, and a token to push with (its value never shown)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise TrainError(f"--push-to-hub {repo_id!r} is not a Hub repo id: {err} Give owner/name, "
                         "e.g. --push-to-hub you/dolly-v2-2.8b.") from None
    if not get_token():
        raise TrainError(f"{NO_TOKEN} (Checked before training, so no GPU time is spent on a run that cannot be "
                         "published.)")


def upload_command(folder: str, repo_id: str, private: bool = False) -> str:
    """The `hf upload` command that does what push does, quoted for a POSIX shell."""
    excludes = [arg for pattern in IGNORE for arg in ("--exclude", pattern)]
    return shlex.join(["hf", "upload", repo_id, folder, *excludes, *(["--private"] if private else [])])


def push(folder: str, repo_id: str, private: bool = False) -> str:
    """Create (or reuse) the model repo and upload `folder`; return the repo URL. Raises TrainError."""
    token = get_token()
    keep = f"The trained model is safe in {folder}; upload it later with `{upload_command(folder, repo_id, private)}`."
    if not token:
        raise TrainError(f"{NO_TOKEN} {keep}")
    api = HfApi(token=token)
    with _hub_errors("", repo_id, keep):
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", ignore_patterns=IGNORE,
                          commit_message="Upload model trained with open Dolly (python -m train)")
    return str(url)


def push_card(card, repo_id: str) -> str:
    """Upload a model card (`python -m train.eval --push-to-hub`) as README.md of the model repo `repo_id`;
    return the commit URL. Raises TrainError."""
    keep = "The results JSON and the local card are written."
    token = get_token()
    if not token:
        raise TrainError(f"{NO_TOKEN} {keep}")
    with _hub_errors("the model card ", repo_id, keep):
        info = HfApi(token=token).upload_file(
            path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id, repo_type="model",
            commit_message="Add evaluation results (open Dolly: python -m train.eval)")
    return str(info)


@contextmanager
def _hub_errors(what: str, repo_id: str, keep: str):
    """A failed push as a TrainError that says why and what is kept (`keep`), never the token."""
    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            why = f"the Hub refused the token (HTTP {status}): it needs write access to {repo_id}"
        else:
            why = f"the Hub answered HTTP {status}: {_first_line(err)}"
        raise TrainError(f"Could not push {what}to {repo_id}: {why}. {keep}") from None
    except Exception as err:  # connection refused, DNS, timeouts, offline mode
        raise TrainError(f"Could not reach the Hugging Face Hub to push {what}to {repo_id} ({type(err).__name__}: "
                         f"{_first_line(err)}). {keep}") from None


def _first_line(err) -> str:
    token = get_token()
    text = (str(err).splitlines() or [""])[0]
    return text.replace(token, "***") if token else text
