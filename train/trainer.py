"""transformers' Trainer with the two things the recipe needs that it does not do by itself:
our length-grouped sampler (whose order depends only on seed and epoch), and a resume that restores
every weight of a GPT-NeoX checkpoint."""
import math
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback


class _EpochOrder(TrainerCallback):
    """accelerate forwards set_epoch to the sampler through its usual wrappers; this also covers a
    resumed multi-process run, where the sampler sits one wrapper deeper than accelerate looks."""

    def __init__(self, sampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(math.floor(state.epoch + 1e-6))


class DollyTrainer(Trainer):
    def __init__(self, sampler, *, lora: bool = False, **kwargs):
        self.sampler, self.lora = sampler, lora
        super().__init__(callbacks=[_EpochOrder(sampler)], **kwargs)

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
