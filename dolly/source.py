"""The one rule for "is this a local path or a Hub id", for data, models and base models alike.

A path that exists is local, always: errors about it then speak of the file, never of the Hub.
A name that does not exist is still read as a (missing) path when it is written like one, so a
typo in a path says "not found" instead of sending the typo to the Hub as a repo id.
"""
from pathlib import Path

# What only a path can look like: Hub ids are `name` or `owner/name` with no suffix like these.
PATH_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".safetensors", ".bin")


def is_local(name: str) -> bool:
    """True when `name` is (or is written as) a local path rather than a Hub id like owner/name."""
    name = str(name).strip()
    if not name:
        return False
    path = Path(name).expanduser()
    if path.exists():
        return True
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or path.suffix.lower() in PATH_SUFFIXES)


def hub_id(name: str) -> str | None:
    """`name` when it is a Hub repo id written in full (owner/name), else None (a path, or a bare name)."""
    name = str(name).strip()
    if is_local(name):
        return None
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) else None


def hub_offline() -> bool:
    """Whether the user switched the Hub client off (HF_HUB_OFFLINE), to say so in errors."""
    import os

    from huggingface_hub import constants

    # The Hub client reads the variable once, at import; a later change of the environment counts too.
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the Hugging Face Hub answers within `timeout` seconds; else why not, in words.

    Asked once before a Hub load, so an unreachable Hub is said in seconds: the Hub client itself
    retries for a minute or more before it gives up.
    """
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE)"
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as error:  # any answer, even an error status, means the Hub is reachable
        return f"{constants.ENDPOINT} did not answer: {type(error).__name__}"
    return None


def cached_snapshot(repo_id: str, repo_type: str = "model") -> str | None:
    """The folder of `repo_id` in this machine's Hugging Face cache, or None if it was never downloaded."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)
    except Exception:  # not cached (or a broken cache entry): the caller says how to get it
        return None
