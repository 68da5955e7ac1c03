"""`TrainingRun`: the state the training-guarantee callbacks of one run share
(`chronos_moe.training.guarantees`): the step count, the data position, the
checkpoint it resumes from and how it saves one.

On JAX, `fit` keeps the variables' values in its own state between steps; code
that reads or writes a variable first writes that state back with
`model.jax_state_sync()` (Keras' JAX trainer), after which the next step reads
the variables again (`sync`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np

from chronos_moe import backend
from chronos_moe.training import checkpoint, faults
from chronos_moe.training.errors import RunError
from chronos_moe.training.logs import StepsLog

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"  # the subdirectory of output_dir holding step-N/


def sync(model: keras.Model) -> None:
    """Writes `fit`'s JAX state back into the model's variables (nothing on torch)."""
    state_sync = getattr(model, "jax_state_sync", None)
    if state_sync is not None:
        state_sync()


class TrainingRun:
    """The state the callbacks of one run share.

    Args:
        output_dir: path-like. Where the logs and `checkpoints/` go.
        dataset: `ChronosDataset`. The endless training stream `fit` reads.
        max_steps: int. The run's length; `fit` stops there.
        resume: `False` (a fresh run; refused when `output_dir` holds
            checkpoints), `True` (the newest complete checkpoint, else a fresh
            run) or a checkpoint directory (that one or a `RunError`).
        config: dict. What `trainer_state.json` records as the run's config.
        config_hash: str. Its fingerprint. Defaults to the first 16 hex digits of
            the sha256 of `config` as JSON.
    """

    def __init__(
        self,
        output_dir: Any,
        dataset: Any,
        max_steps: int,
        resume: bool | str | Path = False,
        config: dict[str, Any] | None = None,
        config_hash: str | None = None,
    ):
        self.output = Path(output_dir)
        self.dataset = dataset
        self.max_steps = max_steps
        self.resume = resume
        self.config = config or {}
        text = json.dumps(self.config, sort_keys=True, default=str).encode()
        self.config_hash = config_hash or hashlib.sha256(text).hexdigest()[:16]
        self.model: keras.Model | None = None
        self.guard: Any = None  # the run's `NaNGuard`
        self.steps_log: StepsLog | None = None
        self.step = self.start_step = self.origin = self.saved = self.skips = 0
        self.finite = True
        self.row: dict[str, float] = {}
        self.learning_rate = math.nan
        self.started = False
        self.close_at_end = True  # the runner closes after its export instead
        # Under torch DDP only rank 0 writes (logs, checkpoints); every rank
        # computes the same losses and weights, and reads the checkpoint it resumes.
        self.writes = backend.process_index() == 0
        self._pending_rng: dict[str, Any] | None = None
        self._in_step = False
        self._closers: list = []

    # ---- the run's life ------------------------------------------------------------------

    def begin(self, model: keras.Model) -> None:
        """Restores the checkpoint to resume (once), and places the data stream."""
        self.model = model
        if not self.started:
            self.started = True
            if self.writes:
                self.output.mkdir(parents=True, exist_ok=True)
            if not model.optimizer.built:  # its variables exist before a load or snapshot
                model.optimizer.build(model.trainable_variables)
            path = self._checkpoint_to_resume()
            if path is not None:
                self._load(path)
        elif self.step != self.origin:  # another `fit`: the dataset's index 0 is the next batch
            self.dataset.set_state(self.dataset.get_state(self.step - self.origin))
            self.origin = self.step

    def _checkpoint_to_resume(self) -> Path | None:
        folder = self.output / CHECKPOINTS
        if self.resume is True:  # rank 0 chooses, every rank loads that one
            latest = None
            if self.writes:
                checkpoint.remove_torn(folder)
                latest = checkpoint.latest_checkpoint(folder, checkpoint.TRAINER_STATE_PARTS)
            return backend.broadcast_object(latest)
        if self.resume:
            return Path(self.resume)
        if checkpoint.list_checkpoints(folder):
            raise RunError(
                f"{folder} holds checkpoints of another run. Pass resume=True to continue it, "
                "or choose another output directory."
            )
        return None

    def _load(self, path: Path) -> None:
        model = self.model
        state = checkpoint.load_checkpoint(
            path, model, model.optimizer, checkpoint.TRAINER_STATE_PARTS
        )
        written_under = (
            state["backend"].get("backend") if isinstance(state["backend"], dict) else None
        )
        if written_under != backend.BACKEND:
            raise RunError(
                f"{path} was written under the {written_under!r} backend; this run uses "
                f"{backend.BACKEND!r}. Resuming on another backend is refused: its random "
                "streams (dropout masks, router jitter) differ, so the run would not continue "
                f"exactly. Resume under KERAS_BACKEND={written_under}."
            )
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if iterations != state["optimizer_iterations"]:
            raise checkpoint.CheckpointCorrupt(
                f"{path / 'optimizer.safetensors'}: the optimizer is at iteration "
                f"{iterations}, the trainer state says {state['optimizer_iterations']} "
                "(an optimizer state of another step?)"
            )
        self.dataset.set_state(state["data"])
        # Applied just before the first step: `fit` on torch draws a seed from the
        # global generator when it opens the data loader, after `on_train_begin`.
        self._pending_rng = state["rng"]
        process_rngs = state.get("process_rngs") or [state["rng"]]
        if len(process_rngs) == backend.process_count():
            self._pending_rng = process_rngs[backend.process_index()]
        else:
            logger.warning(
                "%s was written by %d process(es), this run has %d: it continues from the same "
                "weights, optimizer state and batches, but not bit for bit (other dropout "
                "streams, the gradients summed in another order).",
                path,
                len(process_rngs),
                backend.process_count(),
            )
        self.step = self.start_step = self.origin = self.saved = state["step"]
        self.skips = state.get("consecutive_nan_skips", 0)
        logger.info("Resumed from %s (step %d).", path, self.step)

    def before_step(self) -> None:
        """Once per step, before it: per-step metrics, the pending RNG state, the
        learning rate the step uses, the NaN guard's snapshot, the fault points."""
        if self._in_step:
            return
        self._in_step = True
        model = self.model
        sync(model)
        if self._pending_rng is not None:
            checkpoint.set_global_rng_state(self._pending_rng)
            self._pending_rng = None
        model.reset_metrics()  # logs hold this step's losses, as `train_on_batch` gives
        self.learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        if self.guard is not None:
            self.guard.snapshot()
        number = self.step + 1
        faults.at("step.start", number)
        if faults.poisoned(number):
            _poison(model)

    def after_step(self, logs: dict[str, Any] | None) -> None:
        """Once per step, after it: the step's row, whether it is finite, the stop
        at `max_steps`."""
        if not self._in_step:
            return
        self._in_step = False
        self.step += 1
        faults.at("step.end", self.step)
        values = {key: float(np.asarray(keras.ops.convert_to_numpy(v))) for key, v in logs.items()}
        self.row = {
            "step": self.step,
            "loss": values["loss"],
            # The forecasting loss: T5's cross-entropy or Bolt's quantile loss
            # (a dense model logs only `loss`).
            "ce_loss": values.get("ce_loss", values.get("quantile_loss", values["loss"])),
            "lb_loss": values.get("lb_loss", math.nan),
            "lr": self.learning_rate,
            **{key: value for key, value in values.items() if key.startswith("expert_")},
        }
        self.finite = math.isfinite(self.row["loss"])
        if self.finite and self.guard is not None and self.guard.policy == "skip":
            sync(self.model)
            self.finite = _all_finite(self.model)
        self.skips = 0 if self.finite else self.skips + 1
        if self.step >= self.max_steps:
            self.model.stop_training = True

    @property
    def batch_index(self) -> int:
        """The dataset index of the step that just ended."""
        return self.step - 1 - self.origin

    def ends_window(self, every: int) -> bool:
        """Whether the step that just ended closes a window of `every` steps (the
        last step closes one too)."""
        return self.step % every == 0 or self.step == self.max_steps

    def newest(self) -> str:
        return f"step-{self.saved}" if self.saved else "none"

    def save(self) -> Path:
        """Commits `checkpoints/step-<step>/` (model, optimizer, data position, RNG);
        on the ranks other than 0 of a data-parallel run, only marks it saved."""
        # Each rank's random state (its own dropout stream under torch DDP).
        process_rngs = backend.all_objects(checkpoint.global_rng_state())
        if not self.writes:
            self.saved = self.step
            return self.output / CHECKPOINTS / f"step-{self.step}"
        if self.steps_log is not None:
            self.steps_log.sync()  # the log holds every step a checkpoint holds
        model = self.model
        sync(model)
        path = checkpoint.save_checkpoint(
            self.output / CHECKPOINTS,
            self.step,
            model,
            model.optimizer,
            {
                "optimizer_iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "data": self.dataset.get_state(self.step - self.origin),
                "rng": process_rngs[0],
                **({"process_rngs": process_rngs} if len(process_rngs) > 1 else {}),
                "config": self.config,
                "config_hash": self.config_hash,
                "backend": backend.backend_info(),
                "versions": _versions(),
                "consecutive_nan_skips": self.skips,
            },
        )
        self.saved = self.step
        return path

    def on_close(self, closer) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        """Closes the steps log and restores the SIGTERM handler (also on an error)."""
        while self._closers:
            self._closers.pop()()


def _all_finite(model: keras.Model) -> bool:
    """Whether every trainable weight is finite (one reduction, one host sync)."""
    sums = [keras.ops.sum(keras.ops.cast(v.value, "float32")) for v in model.trainable_variables]
    return bool(np.isfinite(keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.stack(sums)))))


def _poison(model: keras.Model) -> None:
    """The test hook `nan:step.start`: NaN in the first trainable weight."""
    variable = model.trainable_variables[0]
    variable.assign(keras.ops.full(variable.shape, float("nan"), dtype=variable.dtype))


def _versions() -> dict[str, str]:
    import chronos_moe

    return {"chronos_moe": chronos_moe.__version__, "keras": keras.__version__}
