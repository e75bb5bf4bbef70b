"""transformers' Trainer with the three things the recipe needs that it does not do by itself:
our length-grouped sampler (whose order depends only on seed and epoch), a resume that restores
every weight of a GPT-NeoX checkpoint, and each checkpoint folder marked as the run's before it is
written (train/cli.py's manifest)."""
import math
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class _EpochOrder(TrainerCallback):
    """accelerate forwards set_epoch to the sampler through its usual wrappers; this also covers a
    resumed multi-process run, where the sampler sits one wrapper deeper than accelerate looks."""

    def __init__(self, sampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(math.floor(state.epoch + 1e-6))


class _ClaimCheckpoints(TrainerCallback):
    """Marks checkpoint-N as the run's when Trainer has decided to save it (DefaultFlowCallback, which
    runs first, sets should_save) and before it writes: a kill mid-save then leaves a folder that
    --resume and --overwrite know is the run's, not the user's."""

    def __init__(self, claim):
        self.claim = claim

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and state.is_world_process_zero:
            self.claim([f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"])

    on_epoch_end = on_step_end

    def on_save(self, args, state, control, **kwargs):  # after the fact too, should a save be decided elsewhere
        if state.is_world_process_zero:
            self.claim([f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"])


class DollyTrainer(Trainer):
    def __init__(self, sampler, *, lora: bool = False, claim=None, **kwargs):
        """`claim(names)` marks output-dir entries as the run's (train.cli.claim); None for no manifest."""
        self.sampler, self.lora = sampler, lora
        callbacks = [_EpochOrder(sampler)] + ([_ClaimCheckpoints(claim)] if claim else [])
        super().__init__(callbacks=callbacks, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        return self.sampler

    def _load_from_checkpoint(self, checkpoint, model=None):
        super()._load_from_checkpoint(checkpoint, model)
        if self.is_deepspeed_enabled or self.lora:
            return  # DeepSpeed and peft restore their own state under their own names
        # transformers 5 saves GPT-NeoX's `lm_head` under its checkpoint name `embed_out`, but
        # Trainer's resume reads the file with a plain load_state_dict, which skips renamed keys and
        # silently keeps the head of the *new* process. from_pretrained knows the renames: use it.
        target = model if model is not None else self.model
        weights = Path(checkpoint) / "model.safetensors"
        if not weights.exists():
            return
        with safe_open(str(weights), "pt") as saved:
            renamed = set(saved.keys()) != set(target.state_dict())
        if renamed:
            reloaded = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
            target.load_state_dict(reloaded.state_dict(), strict=True)
