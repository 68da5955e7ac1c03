"""Training guarantees as Keras callbacks: what `chronos-moe train` promises,
for anyone who trains with `model.fit`.

`callbacks(...)` returns, in the order they must run:

* `StepsLogger`: `steps.jsonl`, one line per step (losses, learning rate, the
  batch's window identities);
* `NaNGuard`: a non-finite loss stops the run naming the step
  (`nan_policy="abort"`) or undoes the step's update from a snapshot taken
  before it (`"skip"`, at most `max_consecutive_nan_skips` in a row);
* `LossLog`: `log.csv` and `log.json`, the losses averaged over `log_steps`;
* `CollapseMonitor`: an `ExpertCollapseWarning` when one expert takes more
  than `max_expert_share` of the routing over a logging window (MoE models);
* `Progress`: a progress bar (or a plain line per logging window off a terminal);
* `CheckpointSaver`: `checkpoints/step-N/` every `save_steps` and at the last
  step, atomic and with a manifest (`chronos_moe.training.checkpoint`);
* `SigtermStop`: a SIGTERM lets the current step finish, commits its
  checkpoint and raises `TrainingStopped`.

They share one `TrainingRun`: the step count, the data position and, when it
resumes, the checkpoint it restores (model, optimizer, data stream, RNG), so a
resumed `fit` logs and learns what an uninterrupted one would have. The
command line's runner (`chronos_moe.training.run.train`) composes the same
callbacks.

On JAX a callback that reads or writes a variable first calls `sync(model)`
(see `chronos_moe.training.state`).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from chronos_moe import backend
from chronos_moe.moe.balancing import ExpertShareMonitor
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.training import checkpoint
from chronos_moe.training.errors import RunError, TrainingStopped
from chronos_moe.training.logs import LOG_COLUMNS, STEPS_LOG, StepsLog, read_log, write_log
from chronos_moe.training.state import CHECKPOINTS, TrainingRun, sync

logger = logging.getLogger(__name__)


class RunCallback(keras.callbacks.Callback):
    """A callback of a `TrainingRun`: the first one to see a step begin or end
    does the run's shared work (`TrainingRun.before_step` / `after_step`)."""

    def __init__(self, run: TrainingRun):
        super().__init__()
        self.run = run

    def on_train_begin(self, logs=None):
        self.run.begin(self.model)
        if self.run.step >= self.run.max_steps:
            raise RunError(
                f"The run in {self.run.output} has finished its {self.run.max_steps} steps; "
                "nothing is left to train. Raise max_steps to continue it."
            )
        self.train_begin()

    def on_train_batch_begin(self, batch, logs=None):
        self.run.before_step()

    def on_train_batch_end(self, batch, logs=None):
        self.run.after_step(logs)
        self.step_end()

    def on_train_end(self, logs=None):
        if self.run.close_at_end:
            self.run.close()

    def train_begin(self) -> None:
        pass

    def step_end(self) -> None:
        pass


class StepsLogger(RunCallback):
    """Appends each step's line to `steps.jsonl` (see `StepsLog`)."""

    def train_begin(self):
        if self.run.writes and self.run.steps_log is None:
            self.run.steps_log = StepsLog(self.run.output / STEPS_LOG, self.run.step)
            self.run.on_close(self._close)

    def _close(self):
        self.run.steps_log.close()
        self.run.steps_log = None

    def step_end(self):
        run = self.run
        if not run.writes:
            return
        windows = run.dataset.batch_identities(run.batch_index)
        run.steps_log.append(
            {
                **{key: run.row[key] for key in ("step", "ce_loss", "lb_loss", "lr")},
                "skipped": not run.finite,
                "windows": [[int(part) for part in window] for window in windows],
            }
        )


class NaNGuard(RunCallback):
    """Stops at a non-finite loss (`policy="abort"`, a `FloatingPointError` naming
    the step) or undoes the step's update (`"skip"`: every model and optimizer
    variable is restored from a copy taken before the step; a
    `FloatingPointError` after `max_consecutive_skips` in a row)."""

    def __init__(self, run: TrainingRun, policy: str = "abort", max_consecutive_skips: int = 5):
        super().__init__(run)
        if policy not in ("abort", "skip"):
            raise ValueError(f"`policy` must be 'abort' or 'skip'. Received: policy={policy!r}")
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.before: list[tuple] = []
        run.guard = self

    def snapshot(self) -> None:
        if self.policy == "skip":  # copies of every model and optimizer variable, on their device
            variables = [*self.model.variables, *self.model.optimizer.variables]
            self.before = [(v, keras.ops.copy(v.value)) for v in variables]

    def step_end(self):
        run = self.run
        if run.finite:
            return
        loss, step = run.row["loss"], run.step
        if self.policy == "abort":
            run.close()
            raise FloatingPointError(
                f"The loss became {loss} at step {step}; stopping (nan_policy: abort). "
                f"The newest checkpoint is {run.newest()}."
            )
        sync(self.model)
        for variable, value in self.before:
            variable.assign(value)
        logger.warning(
            "The loss became %s at step %d; its update was skipped (%d in a row, "
            "nan_policy: skip).",
            loss,
            step,
            run.skips,
        )
        if run.skips >= self.max_consecutive_skips:
            run.close()
            raise FloatingPointError(
                f"The loss was non-finite in {run.skips} steps in a row (steps "
                f"{step - run.skips + 1} to {step}); stopping (nan_policy: skip, "
                f"max_consecutive_nan_skips: {self.max_consecutive_skips}). The newest "
                f"checkpoint is {run.newest()}."
            )


class LossLog(RunCallback):
    """Rewrites `log.csv` and `log.json` (atomically) every `every` steps: the mean
    `loss`, `ce_loss`, `lb_loss` and `lr` of the window's applied steps, and the
    seconds since the run began (resumed runs included)."""

    def __init__(self, run: TrainingRun, every: int):
        super().__init__(run)
        self.every = every
        self.log: list[dict[str, float]] = []
        self.window: list[dict[str, float]] = []

    def train_begin(self):
        if not self.log:
            self.log = read_log(self.run.output / "log.csv", upto=self.run.step)
        self.started = time.perf_counter() - (self.log[-1]["seconds"] if self.log else 0.0)

    def step_end(self):
        run = self.run
        if run.finite:
            self.window.append(run.row)  # (the log averages the steps that were applied)
        if self.window and run.ends_window(self.every):
            mean = {key: float(np.mean([r[key] for r in self.window])) for key in LOG_COLUMNS[1:5]}
            self.log.append(
                {"step": run.step, **mean, "seconds": time.perf_counter() - self.started}
            )
            if run.writes:
                write_log(run.output, self.log)
            self.window = []


class CollapseMonitor(RunCallback):
    """Warns (`ExpertCollapseWarning`) when one expert's share of the routing,
    averaged over the applied steps of each `every`-step window, exceeds
    `max_share` (see `ExpertShareMonitor`)."""

    def __init__(self, run: TrainingRun, max_share: float, every: int):
        super().__init__(run)
        self.monitor = ExpertShareMonitor(max_share)
        self.every = every
        self.window: list[dict[str, float]] = []

    def train_begin(self):
        self.monitor.set_model(self.model)

    def step_end(self):
        run = self.run
        if run.finite:
            self.window.append(run.row)
        if self.window and run.ends_window(self.every):
            shares = {
                key: np.mean([r.get(key, 0.0) for r in self.window]) for key in self.window[0]
            }
            self.monitor.check(shares, f"steps {self.window[0]['step']}-{run.step}")
            self.window = []


class Progress(RunCallback):
    """A progress bar of the forecasting loss (cross-entropy; Chronos-Bolt's
    `quantile_loss`) and, for MoE, the load-balancing loss on a terminal;
    elsewhere one plain line per logging window (from `log`)."""

    def __init__(self, run: TrainingRun, log: LossLog | None = None):
        super().__init__(run)
        self.loss_log = log
        self.bar = sys.stdout.isatty()

    def train_begin(self):
        moe = isinstance(self.model, ChronosMoE)
        self.shown = ("ce_loss", "lb_loss") if moe else ("ce_loss",)
        # The row's forecasting loss under the model's name for it (Bolt: quantile_loss).
        forecast = getattr(self.model, "forecast_loss_name", "ce_loss")
        self.labels = {"ce_loss": forecast, "lb_loss": "lb_loss"}
        self.progress = keras.utils.Progbar(
            self.run.max_steps,
            verbose=int(self.bar),
            stateful_metrics=[self.labels[key] for key in self.shown],
        )
        if self.run.step:
            self.progress.update(self.run.step)
        self.printed = len(self.loss_log.log) if self.loss_log else 0

    def step_end(self):
        run = self.run
        self.progress.update(run.step, [(self.labels[key], run.row[key]) for key in self.shown])
        if self.bar or self.loss_log is None or len(self.loss_log.log) == self.printed:
            return
        self.printed = len(self.loss_log.log)
        row = self.loss_log.log[-1]
        losses = "".join(f" - {self.labels[key]}: {row[key]:.4f}" for key in self.shown)
        print(f"step {run.step}/{run.max_steps}{losses} - {row['seconds']:.0f}s")


class CheckpointSaver(RunCallback):
    """Commits `checkpoints/step-N/` every `every` steps and at the last one,
    keeping the newest `keep` (all when `None`)."""

    def __init__(self, run: TrainingRun, every: int, keep: int | None = None):
        super().__init__(run)
        self.every = every
        self.keep = keep

    def step_end(self):
        run = self.run
        if run.ends_window(self.every):
            run.save()
            if self.keep and run.writes:
                checkpoint.prune_checkpoints(run.output / CHECKPOINTS, self.keep)


class SigtermStop(RunCallback):
    """While training, a SIGTERM lets the current step finish, commits its
    checkpoint (unless it was just saved) and raises `TrainingStopped`; a second
    one changes nothing. Only the main thread can install a handler; elsewhere
    SIGTERM keeps its default."""

    def __init__(self, run: TrainingRun):
        super().__init__(run)
        self.received = 0
        self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.received += 1

    def train_begin(self):
        if not self.installed and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
            self.run.on_close(self._uninstall)

    def _uninstall(self):
        signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
        self.installed = False

    def step_end(self):
        run = self.run
        # Every rank stops after the same step (torchrun signals them all, not at once).
        if not backend.any_process(bool(self.received)):
            return
        if run.saved != run.step:
            run.save()
        path = run.output / CHECKPOINTS / f"step-{run.step}"
        run.close()
        raise TrainingStopped(
            f"Stopped by SIGTERM after step {run.step}; checkpoint {path} is committed. "
            "Continue with --resume.",
            run.step,
            path,
        )


def compose(
    run: TrainingRun,
    save_steps: int,
    save_total_limit: int | None = None,
    log_steps: int = 500,
    nan_policy: str = "abort",
    max_consecutive_nan_skips: int = 5,
    max_expert_share: float | None = None,
    progress: bool = True,
) -> list[RunCallback]:
    """The callbacks of `run`, in the order they must run (see the module docstring)."""
    loss_log = LossLog(run, log_steps)
    composed: list[RunCallback] = [
        StepsLogger(run),
        NaNGuard(run, nan_policy, max_consecutive_nan_skips),
        loss_log,
    ]
    if max_expert_share is not None:
        composed.append(CollapseMonitor(run, max_expert_share, log_steps))
    if progress:
        composed.append(Progress(run, loss_log))
    composed += [CheckpointSaver(run, save_steps, save_total_limit), SigtermStop(run)]
    return composed


def callbacks(
    output_dir: Any,
    dataset: Any,
    *,
    max_steps: int,
    save_steps: int = 500,
    save_total_limit: int | None = None,
    log_steps: int = 100,
    nan_policy: str = "abort",
    max_consecutive_nan_skips: int = 5,
    max_expert_share: float | None = 0.9,
    resume: bool | str | Path = False,
    progress: bool = True,
) -> list[keras.callbacks.Callback]:
    """The training guarantees of `chronos-moe train`, as callbacks for `model.fit`.

    Pass them with `fit(dataset, epochs=1, steps_per_epoch=max_steps, verbose=0)`
    on an endless `ChronosDataset`; `fit` stops at `max_steps` (counting the
    steps of a resumed run). A run killed at any moment (even `kill -9`) and
    started again with `resume=True` continues from its newest complete
    checkpoint exactly: the same batches, losses and weights as an
    uninterrupted run on the same backend.

    The metrics are reset before each step, so the logs `fit` passes to other
    callbacks (and returns in `History`) are those of one step, as
    `train_on_batch` gives them, not running means over the epoch.

    Args:
        output_dir: path-like. Receives `steps.jsonl`, `log.csv`, `log.json` and
            `checkpoints/step-N/`.
        dataset: `ChronosDataset`. The training stream given to `fit`.
        max_steps: int. The run's length in steps.
        save_steps: int. Steps between checkpoints. Defaults to `500`.
        save_total_limit: int. Checkpoints kept (the newest). Defaults to all.
        log_steps: int. Steps per row of `log.csv`. Defaults to `100`.
        nan_policy: str. `"abort"` or `"skip"` (see `NaNGuard`). Defaults to `"abort"`.
        max_consecutive_nan_skips: int. Skipped steps in a row that stop the run.
            Defaults to `5`.
        max_expert_share: float. The routing share that warns of a collapsing
            router (MoE models); `None` turns the monitor off. Defaults to `0.9`.
        resume: bool or path. `True` continues from the newest complete
            checkpoint in `output_dir` (a fresh run when there is none); a path
            resumes from that checkpoint or fails. Defaults to `False` (a
            directory holding checkpoints is refused with a `RunError`).
        progress: bool. Show a progress bar. Defaults to `True`.

    Returns:
        A list of `keras.callbacks.Callback`, in the order they must run.

    Example:

    >>> import tempfile, keras
    >>> from chronos_moe import ChronosT5
    >>> from chronos_moe.data import ChronosDataset, generate_sample_series
    >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, d_model=16,
    ...     d_ff=32, num_heads=2, d_kv=8,
    ...     chronos_config={"n_tokens": 64, "context_length": 16, "prediction_length": 4})
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    >>> dataset = ChronosDataset(generate_sample_series(8, 80), model.chronos_config,
    ...     batch_size=4, min_past=8)
    >>> folder = tempfile.mkdtemp()
    >>> guarantees = callbacks(folder, dataset, max_steps=4, save_steps=2, progress=False)
    >>> _ = model.fit(dataset, epochs=1, steps_per_epoch=4, verbose=0, callbacks=guarantees)
    >>> sorted(p.name for p in Path(folder, "checkpoints").iterdir())
    ['step-2', 'step-4']
    """
    settings = {
        "max_steps": max_steps,
        "save_steps": save_steps,
        "save_total_limit": save_total_limit,
        "log_steps": log_steps,
        "nan_policy": nan_policy,
        "max_consecutive_nan_skips": max_consecutive_nan_skips,
        "max_expert_share": max_expert_share,
    }
    run = TrainingRun(output_dir, dataset, max_steps, resume=resume, config=settings)
    return compose(
        run,
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        log_steps=log_steps,
        nan_policy=nan_policy,
        max_consecutive_nan_skips=max_consecutive_nan_skips,
        max_expert_share=max_expert_share,
        progress=progress,
    )
