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

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")
