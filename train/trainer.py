"""transformers' Trainer with the four things the recipe needs that it does not do by itself:
our length-grouped sampler (whose order depends only on seed and epoch), a resume that restores
every weight of a GPT-NeoX checkpoint, each checkpoint folder marked as the run's before it is
written (train/cli.py's manifest), and a resumed run's train loss averaged over the whole run."""
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint


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


class RunLoss(TrainerCallback, ExportableState):
    """Trainer's loss bookkeeping at a checkpoint, saved with it so that a resumed run carries on with it.

    Trainer keeps two sums in memory: the losses logged so far and the steps since the last log. A
    resumed train() starts both at zero, so its train_loss was the mean of the resumed steps only and
    its first log averaged only the steps after the checkpoint. This record rides in each checkpoint's
    trainer_state.json (Trainer saves ExportableState callbacks under stateful_callbacks); on resume
    DollyTrainer puts both sums back, and logs and train_loss come out as in an uninterrupted run."""

    def __init__(self, trainer=None):
        self.trainer, self.record = trainer, {}

    def state(self) -> dict:
        return {"args": {}, "attributes": {"record": self.record}}

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is not None:  # Trainer has just set its sums to zero for this train() call
            self.trainer._restore_loss_sums()


FRESH = {"logged_sum": 0.0, "last_logged": 0, "since_log": 0.0}


def loss_sums(checkpoint) -> dict | None:
    """The loss bookkeeping of the steps up to `checkpoint` (FRESH's keys), or None when it cannot tell."""
    state = json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    step = state["global_step"]
    saved = (state.get("stateful_callbacks") or {}).get(RunLoss.__name__)
    if isinstance(saved, dict) and "record" in saved.get("attributes", {}):
        record = saved["attributes"]["record"]
        return {k: record[k] for k in FRESH} if record.get("step") == step else None
    # A checkpoint written before the record existed: its logged losses (each the mean since the log
    # before) add up to the sum when the last log fell on the checkpoint's step, as with the default
    # flags (--save-steps a multiple of --logging-steps).
    total, previous = 0.0, 0
    for entry in state.get("log_history", []):
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return {"logged_sum": total, "last_logged": previous, "since_log": 0.0} if previous == step else None


class DollyTrainer(Trainer):
    def __init__(self, sampler, *, lora: bool = False, claim=None, **kwargs):
        """`claim(names)` marks output-dir entries as the run's (train.cli.claim); None for no manifest."""
        self.sampler, self.lora = sampler, lora
        # The loss bookkeeping of the steps before this train() call (None: unknown, see loss_sums).
        self._before = dict(FRESH)
        callbacks = [_EpochOrder(sampler), RunLoss(self)] + ([_ClaimCheckpoints(claim)] if claim else [])
        super().__init__(callbacks=callbacks, **kwargs)

    @property
    def loss_covers_whole_run(self) -> bool:
        """Whether train()'s train_loss is the mean over every step of the run. Only a resume from a
        checkpoint older than RunLoss, written between two logs, cannot tell; it then averages the
        resumed steps, as Trainer does."""
        return self._before is not None

    def train(self, resume_from_checkpoint=None, **kwargs) -> TrainOutput:
        """Trainer.train, whose train_loss is the mean over every step of the run, resumed or not."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        self._before = loss_sums(resume_from_checkpoint) if resume_from_checkpoint else dict(FRESH)
        result = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        return TrainOutput(result.global_step, result.metrics["train_loss"], result.metrics)

    def _restore_loss_sums(self):
        # The steps between the checkpoint's last log and the checkpoint count in the next log, as
        # they would have without the interruption.
        if self._before is not None and self.state.global_step > 0:
            self._tr_loss += self._before["since_log"]
            self._globalstep_last_logged = self._before["last_logged"]

    def log(self, logs, start_time=None):
        # The end of train() logs Trainer's train_loss: the mean over the steps of this call. Logged
        # (TensorBoard, trainer state) and returned, it becomes the whole run's mean.
        if "train_loss" in logs and self._before is not None and self._initial_global_step > 0:
            logs["train_loss"] = (self._before["logged_sum"] + self._total_loss_scalar) / self.state.global_step
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        # Trainer's sums now: the logged losses, and the steps since the last log still on the device
        # (averaged over processes, as the next log would).
        since_log = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        record = {"step": -1}  # unknown: a resume from here reports what Trainer does
        if self._before is not None:
            record = {"step": self.state.global_step, "logged_sum": self._before["logged_sum"] + self._total_loss_scalar,
                      "last_logged": self._globalstep_last_logged, "since_log": since_log}
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, RunLoss):
                callback.record = record
        # A run resumed from a checkpoint older than the record has no slot for it yet.
        self.state.stateful_callbacks.setdefault(RunLoss.__name__, {})
        super()._save_checkpoint(model, trial)

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
