"""What a run needs from the disk under --output-dir, checked before anything loads, and a full disk
during the run told as a message, not a traceback.

A run writes a checkpoint every --save-steps: the fp32 weights (4 bytes a parameter) and AdamW's two
moments (8 more), so one checkpoint of Pythia-12b is ~140 GB. Without these checks a read-only or
misspelt folder failed only after the data and the model had loaded, and a disk that filled up ended
in torch's "[enforce fail at inline_container.cc:672] unexpected pos".
"""
import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from train.cli import CHECKPOINT, TrainError, last_checkpoint

PROBE_PREFIX = ".python-m-train-write-test-"
# Per parameter: fp32 weights (4) + AdamW's exp_avg and exp_avg_sq (8).
CHECKPOINT_BYTES_PER_PARAM = 12
# A LoRA run's checkpoints hold only the adapter; its largest write is the merged fp32 model at the end.
MERGED_BYTES_PER_PARAM = 4
# Tokenizer, config, scheduler and RNG state that go with every checkpoint (Pythia's tokenizer.json is 2 MB).
CHECKPOINT_EXTRA_BYTES = 4 * 2**20
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def size_text(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def existing_folder(out: Path) -> Path:
    """The folder the run's files will land in: --output-dir itself, or the nearest folder above it that
    exists (the run creates the rest). A file on the way is an error."""
    path = Path(os.path.abspath(out))
    while not path.exists() and not path.is_symlink() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        where = "is a file" if path == Path(os.path.abspath(out)) else f"lies under {path}, which is a file"
        raise TrainError(f"--output-dir {out} {where}, not a folder. Give a folder (new or of an earlier run), "
                         "e.g. --output-dir dolly-out.")
    return path


def check_writable(out: Path) -> None:
    """Prove the run can write its output: create and remove a probe that only this check writes, in
    --output-dir, or, while it does not exist yet, in the folder it will be created in."""
    folder = existing_folder(out)
    try:
        if folder == Path(os.path.abspath(out)):
            fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=folder))
    except OSError as err:
        if err.errno == errno.EROFS:
            why = f"{folder} is on a read-only file system"
        elif err.errno in (errno.EACCES, errno.EPERM):
            why = f"you may not write in {folder}"
        elif err.errno in DISK_FULL_ERRNOS:
            why = f"the disk holding {folder} is full"
        else:
            why = f"writing in {folder} failed: {err.strerror or err}"
        raise TrainError(f"Cannot write to --output-dir {out}: {why}. Pick an --output-dir on a writable disk "
                         "with room for the run's checkpoints.") from None


def checkpoint_bytes(config, lora: bool) -> int:
    """The size of the largest file set the run writes at once, from the model's config alone: the
    parameters are counted on the meta device, so no weight is read or allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    except Exception:  # an architecture that cannot be built from its config alone: no estimate, no check
        return 0
    return params * (MERGED_BYTES_PER_PARAM if lora else CHECKPOINT_BYTES_PER_PARAM) + CHECKPOINT_EXTRA_BYTES


def free_bytes(out: Path) -> int:
    return shutil.disk_usage(existing_folder(out)).free


def check_room(out: Path, needed: int) -> None:
    free = free_bytes(out)
    if free < needed:
        raise TrainError(f"--output-dir {out} is on a disk with {size_text(free)} free, but one checkpoint of this "
                         f"model (its weights and optimizer state) needs about {size_text(needed)}. Free some space, "
                         "or pick an --output-dir on a bigger disk.")


def _is_disk_full(err: BaseException, out: Path, needed: int) -> bool:
    seen = err
    while seen is not None:  # the errno may sit on a wrapped cause
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    # torch.save and safetensors report a full disk without an errno ("unexpected pos", "file write
    # failed"). The room for a checkpoint was there at the start, so a disk now short of it was filled by
    # this run; anything else that failed on a disk with room is not a disk problem and is raised as is.
    try:
        return free_bytes(out) < needed
    except OSError:
        return False


def _remove_incomplete_checkpoints(out: Path) -> list:
    """Checkpoints whose save the full disk cut short: trainer_state.json is written last, --resume
    skips them, and they hold the space the user now needs."""
    removed = []
    for folder in sorted(Path(out).glob("checkpoint-*")):
        if CHECKPOINT.fullmatch(folder.name) and folder.is_dir() and not (folder / "trainer_state.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


@contextmanager
def full_disk_is_a_message(out, needed: int, main_process: bool = True):
    """Around everything that writes to --output-dir during the run: a full disk becomes a TrainError
    naming the folder, the free space and the checkpoint to --resume from."""
    try:
        yield
    except Exception as err:
        out = Path(out)
        if not _is_disk_full(err, out, needed):
            raise
        removed = _remove_incomplete_checkpoints(out) if main_process else []
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        message = (f"The disk holding --output-dir {out} filled up during the run ({type(err).__name__}: {first_line}). "
                   f"It has {size_text(free_bytes(out))} free"
                   + (f" after removing the incomplete {', '.join(removed)}" if removed else "")
                   + f"; one checkpoint of this model needs about {size_text(needed)}, and the run keeps up to "
                   "--save-total-limit of them plus the final model. ")
        checkpoint = last_checkpoint(out)
        if checkpoint:
            message += (f"The last complete checkpoint is {checkpoint}: free some space, then run the same command "
                        "with --resume to continue from it.")
        else:
            message += "No checkpoint was completed: free some space, then run the same command again."
        raise TrainError(message) from None
