"""One training run from a `TrainingConfig`: model, optimizer, data, the step
loop with logging, periodic atomic checkpoints, exact resume, final export."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import keras
import numpy as np

from chronos_moe import backend, checkpoints

# One atomic-write helper for the package (write to a temporary name, fsync, rename).
from chronos_moe.checkpoints import write_atomically
from chronos_moe.config import ChronosConfig
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.balancing import ExpertShareMonitor
from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
from chronos_moe.tokenizer import MeanScaleUniformBins
from chronos_moe.training import checkpoint, faults
from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.training.lock import OutputLock, RunError
from chronos_moe.training.schedules import WarmupSchedule

logger = logging.getLogger(__name__)

# Keys that must not change between a run and its resume (old -> new is refused).
RESUME_KEYS = (
    "training_data_paths",
    "probability",
    "context_length",
    "prediction_length",
    "min_past",
    "max_missing_prop",
    "shuffle_buffer_length",
    "per_device_train_batch_size",
    "model_id",
    "random_init",
    "tie_embeddings",
    "tokenizer_kwargs",
    "n_tokens",
    "use_eos_token",
    "use_moe",
    "num_experts",
    "num_active_experts",
    "router_hidden_dim",
    "expert_hidden_dim",
    "seed",
)
LOG_COLUMNS = ("step", "loss", "ce_loss", "lb_loss", "lr", "seconds")
MIXED_PRECISION_POLICY = "mixed_bfloat16"
CHECKPOINTS = "checkpoints"  # the subdirectory of output_dir holding step-N/
STEPS_LOG = "steps.jsonl"  # one JSON line per training step


class TrainingStopped(Exception):
    """A run stopped by SIGTERM: the checkpoint of its last finished step is
    committed (`checkpoint`), and `--resume` continues it."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    model: ChronosT5 | ChronosMoE
    log: list[dict[str, float]]
    final_dir: Path


def build_model(config: TrainingConfig) -> ChronosT5 | ChronosMoE:
    """A fresh (size preset) or pretrained (`model_id`) Chronos model, wrapped
    in experts when `use_moe`."""
    keras.utils.set_random_seed(config.seed)
    chronos = ChronosConfig.from_dict(config.chronos_config)
    if config.random_init:
        base = ChronosT5.from_preset(
            config.model_size,
            vocab_size=config.n_tokens,
            tie_word_embeddings=config.tie_embeddings,
            initializer_factor=config.initializer_factor,
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
            chronos_config=chronos.to_dict(),
        )
    else:
        base = checkpoints.load_chronos(config.model_id)
        if isinstance(base, ChronosMoE):
            raise ConfigError(
                f"`model_id` {config.model_id!r} is already a ChronosMoE model; "
                "continue training it with `use_moe: false` or start from a dense checkpoint."
            )
        if base.vocab_size != config.n_tokens:
            raise ConfigError(
                f"`n_tokens` must match the checkpoint's vocabulary. "
                f"Received: n_tokens={config.n_tokens}, checkpoint vocab_size={base.vocab_size}"
            )
        base.chronos_config = chronos
    if not config.use_moe:
        return base
    return build_moe_chronos(
        base,
        num_experts=config.num_experts,
        top_k=config.num_active_experts,
        load_balancing_weight=config.load_balancing_weight,
        router_hidden_dim=config.router_hidden_dim,
        expert_hidden_dim=config.expert_hidden_dim,
        freeze_base=config.freeze_base,
        router_z_loss_weight=config.router_z_loss_weight,
        router_jitter_noise=config.router_jitter_noise,
        seed=config.seed,
    )


def build_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """AdamW with the reference trainer's defaults and schedule."""
    schedule = WarmupSchedule(
        config.learning_rate,
        total_steps=config.max_steps,
        warmup_steps=int(config.warmup_ratio * config.max_steps),
        kind=config.lr_scheduler_type,
    )
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        global_clipnorm=config.max_grad_norm or None,
        gradient_accumulation_steps=(
            config.gradient_accumulation_steps if config.gradient_accumulation_steps > 1 else None
        ),
    )


def build_dataset(config: TrainingConfig, mode: str = "train", paths=None):
    """The training (or validation) stream of tokenized windows."""
    from chronos_moe.data import ChronosDataset

    tokenizer = MeanScaleUniformBins.from_config(ChronosConfig.from_dict(config.chronos_config))
    return ChronosDataset(
        paths or config.training_data_paths,
        tokenizer,
        batch_size=config.per_device_train_batch_size,
        probability=config.probability if paths is None else None,
        min_past=config.min_past,
        max_missing_prop=config.max_missing_prop,
        shuffle_buffer_length=config.shuffle_buffer_length,
        mode=mode,
        seed=config.seed,
    )


@dataclasses.dataclass
class _Start:
    """Where a run starts: a fresh directory, or a checkpoint."""

    clear: bool = False  # --overwrite: delete the other run's files (once data and model are built)
    checkpoint: Path | None = None


def _prepare_output(
    config: TrainingConfig, resume: bool, overwrite: bool, resume_from: Path | None, verbose: bool
) -> _Start:
    """Checks the output directory and picks the checkpoint to resume from.

    `--resume` takes the newest checkpoint that verifies and says which newer
    ones it skipped and why (a torn, truncated, tampered or incomplete one);
    `resume_from` (`--resume-from PATH`) loads that checkpoint or fails, never
    another one. Nothing is deleted here: `--overwrite` clears the directory
    only once data and model are built.
    """
    output = Path(config.output_dir)
    occupied = output.exists() and any(p.name != ".lock" for p in output.iterdir())
    if resume_from is not None:
        try:
            state = checkpoint.verify_checkpoint(resume_from, checkpoint.TRAINER_STATE_PARTS)
        except checkpoint.CheckpointCorrupt as error:
            raise RunError(
                f"--resume-from {resume_from}: {error}. Not falling back to another checkpoint."
            ) from error
        _check_resume_compatible(config, state, resume_from)
        return _Start(checkpoint=Path(resume_from))
    if resume:
        checkpoint.remove_torn(output / CHECKPOINTS)
        latest, skipped = checkpoint.find_resumable(
            output / CHECKPOINTS, checkpoint.TRAINER_STATE_PARTS
        )
        reasons = "".join(f"\n  skipped {path.name}: {why}" for path, why in skipped)
        if latest is None:
            raise RunError(f"--resume: no complete checkpoint in {output / CHECKPOINTS}.{reasons}")
        if skipped:  # said once: printed when verbose, else a logged warning
            message = f"chronos-moe train: falling back to {latest.name}:{reasons}"
            if verbose:
                print(message, file=sys.stderr)
            else:
                logger.warning(message)
        state = json.loads((latest / "trainer_state.json").read_text())
        _check_resume_compatible(config, state, latest)
        return _Start(checkpoint=latest)
    if occupied and not overwrite:
        raise RunError(
            f"{output} already holds files of another run. Use --resume to continue it or "
            "--overwrite to replace it."
        )
    return _Start(clear=occupied)


def _clear_output(output: Path) -> None:
    for entry in output.iterdir():
        if entry.name != ".lock":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _check_resume_compatible(config: TrainingConfig, state: dict[str, Any], path: Path) -> None:
    """Refuses a checkpoint of another backend or of other RESUME_KEYS settings
    (listed old -> new); logs a changed `max_steps`."""
    written_under = state["backend"].get("backend") if isinstance(state["backend"], dict) else None
    if written_under != backend.BACKEND:
        raise RunError(
            f"{path} was written under the {written_under!r} backend; this run uses "
            f"{backend.BACKEND!r}. Resuming on another backend is refused: its random streams "
            "(dropout masks, router jitter) differ, so the run would not continue exactly. "
            f"Resume with `--backend {written_under}`."
        )
    old = state["config"] if isinstance(state["config"], dict) else {}
    absent = "<absent>"
    changed = [
        f"{key}: {old.get(key, absent)!r} -> {getattr(config, key)!r}"
        for key in RESUME_KEYS
        if old.get(key, absent) != getattr(config, key)
    ]
    if changed:
        raise RunError(
            f"The config changed since the checkpoint {path}; refusing to resume (old -> new): "
            + "; ".join(changed)
        )
    if state["config_hash"] != config.fingerprint(RESUME_KEYS):
        raise RunError(
            f"{path / 'trainer_state.json'}: config_hash {state['config_hash']!r} is not the "
            f"fingerprint of its own config ({config.fingerprint(RESUME_KEYS)!r}); refusing to "
            "resume from an edited trainer state."
        )
    if old.get("max_steps") != config.max_steps:
        message = f"max_steps changed from {old.get('max_steps')} to {config.max_steps} on resume."
        logger.warning(message)


def train(
    config: TrainingConfig,
    resume: bool = False,
    overwrite: bool = False,
    verbose: bool = True,
    resume_from: str | os.PathLike | None = None,
) -> TrainResult:
    """Runs (or resumes) the training described by `config`.

    Writes into `config.output_dir`: `config.yaml` (the resolved config),
    `data_report.json` (per data file: rows, series, series kept, dropped as too
    short or too incomplete, ±inf values), `log.csv` and `log.json` (one row per
    logged step: step, loss, ce_loss, lb_loss, lr, seconds since the start of
    the run, resumed runs included),
    `steps.jsonl` (one line per step: losses, learning rate and the batch's
    window identities, see `StepsLog`), `checkpoints/step-N/` every `save_steps` (atomic, see
    `chronos_moe.training.checkpoint`) and `final/` (Hugging Face layout, which
    `ChronosPipeline.from_pretrained` loads, plus `model.keras`). Every file is
    written to a temporary name and renamed into place.

    A SIGTERM (in the main thread) lets the current step finish, commits a
    checkpoint of it and raises `TrainingStopped`; a non-finite loss is handled
    by `config.nan_policy` (`abort`: a `FloatingPointError` naming the step;
    `skip`: the step's update is undone). A failed checkpoint write is a
    `CheckpointSaveError` naming the step and the cause.

    Args:
        config: TrainingConfig. The run.
        resume: bool. Continue from the newest complete checkpoint in
            `output_dir` (model, optimizer, data position, RNG); the losses are
            those an uninterrupted run would have logged. Newer checkpoints that
            do not verify are skipped, each named with the failed check (a
            warning, printed when `verbose`). A checkpoint written under another
            backend, or with other `RESUME_KEYS` settings, is refused (`RunError`,
            listing old -> new); a raised `max_steps` is logged. Defaults to `False`.
        overwrite: bool. Replace an output directory that holds another run.
            Defaults to `False` (refused with a `RunError`).
        verbose: bool. Print the backend and device, and a progress bar of the
            cross-entropy (and, for MoE, load-balancing) loss; when stdout is not
            a terminal, one plain line per `log_steps` instead. Defaults to `True`.
        resume_from: path-like. Resume from this checkpoint directory
            (`.../checkpoints/step-N`) and no other: a corrupt or incomplete one
            is a `RunError`, never a fall-back. Defaults to `None`.

    Returns:
        `TrainResult`: the output directory, the trained model, the logged rows
        and the `final/` directory.

    Example:

    >>> import tempfile, numpy as np
    >>> from chronos_moe import ChronosT5, checkpoints
    >>> from chronos_moe.data import generate_sample_series, write_arrow
    >>> folder = tempfile.mkdtemp()
    >>> data = write_arrow(generate_sample_series(8, 80), f"{folder}/train.arrow")
    >>> small = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, d_model=16,
    ...     d_ff=32, num_heads=2, d_kv=8, chronos_config={"n_tokens": 64})
    >>> _ = checkpoints.save_chronos(small, f"{folder}/start")
    >>> config = TrainingConfig(training_data_paths=[str(data)], model_id=f"{folder}/start",
    ...     random_init=False, n_tokens=64, context_length=16, prediction_length=4,
    ...     min_past=8, per_device_train_batch_size=4, max_steps=2, save_steps=2,
    ...     log_steps=1, output_dir=f"{folder}/run")
    >>> result = train(config, verbose=False)
    >>> [row["step"] for row in result.log], sorted(p.name for p in result.final_dir.iterdir())
    ([1, 2], ['config.json', 'model.keras', 'model.safetensors'])
    """
    _check_backend(config)
    output = Path(config.output_dir)
    # Order: the config is valid (TrainingConfig); take the lock (a second run on this
    # directory exits here, before any data or model is loaded); check the directory
    # and the checkpoint to resume (cheap: JSON and checksums); then read the data
    # (bad data fails before the model is built); then build the model.
    with OutputLock(output):
        start = _prepare_output(
            config, resume, overwrite, None if resume_from is None else Path(resume_from), verbose
        )
        dataset = build_dataset(config)
        previous_policy = keras.mixed_precision.global_policy()
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICY)
        try:
            model = build_model(config)
            if start.clear:
                _clear_output(output)
            return _run(config, dataset, model, output, start, verbose)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    config: TrainingConfig,
    dataset: Any,
    model: ChronosT5 | ChronosMoE,
    output: Path,
    start: _Start,
    verbose: bool,
) -> TrainResult:
    """The body of `train` once the output directory is checked and locked."""
    optimizer = build_optimizer(config)
    model.compile(optimizer=optimizer, jit_compile=backend.JIT_COMPILE)
    start_step = skips = 0  # skips: non-finite steps in a row (nan_policy: skip)
    if start.checkpoint is not None:
        resume_from = start.checkpoint
        state = checkpoint.load_checkpoint(
            resume_from, model, optimizer, checkpoint.TRAINER_STATE_PARTS
        )
        iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if iterations != state["optimizer_iterations"]:
            raise checkpoint.CheckpointCorrupt(
                f"{resume_from / 'optimizer.safetensors'}: the optimizer is at iteration "
                f"{iterations}, the trainer state says {state['optimizer_iterations']} "
                "(an optimizer state of another step?)"
            )
        dataset.set_state(state["data"])
        checkpoint.set_global_rng_state(state["rng"])
        start_step = state["step"]
        skips = state.get("consecutive_nan_skips", 0)
        logger.info("Resumed from %s (step %d).", resume_from, start_step)
    write_text_atomically(output / "config.yaml", config.to_yaml())
    # What each data file held and why series were dropped (per file and reason).
    write_text_atomically(output / "data_report.json", json.dumps(dataset.report.to_dict()))
    info = backend.backend_info()
    if verbose:
        print(
            f"chronos-moe train: backend {info['backend']} on {info['device']}"
            + (f", resuming at step {start_step}" if start_step else "")
        )
    log = _read_log(output / "log.csv", upto=start_step)
    shown = ("ce_loss", "lb_loss") if config.use_moe else ("ce_loss",)
    # A progress bar only on a terminal: redirected output gets one plain line per
    # logging window instead of the bar's carriage returns and ANSI colour codes.
    bar = verbose and sys.stdout.isatty()
    progress = keras.utils.Progbar(config.max_steps, verbose=int(bar), stateful_metrics=shown)
    if start_step:
        progress.update(start_step)
    # `seconds` counts from the start of the run, across resumes.
    started = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
    window: list[dict[str, float]] = []
    guard = config.nan_policy == "skip"
    if guard and not optimizer.built:  # its variables exist before the first snapshot
        optimizer.build(model.trainable_variables)
    saved = start_step  # the newest committed checkpoint
    # Routing shares over each logging window; a warning when one expert takes too much.
    collapse = ExpertShareMonitor(config.max_expert_share) if config.use_moe else None
    if collapse is not None:
        collapse.set_model(model)

    def save(step: int) -> None:
        steps_log.sync()  # the log holds every step a checkpoint holds
        checkpoint.save_checkpoint(
            output / CHECKPOINTS,
            step,
            model,
            optimizer,
            {
                "optimizer_iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                "data": dataset.get_state(),
                "rng": checkpoint.global_rng_state(),
                "config": config.to_dict(),
                "config_hash": config.fingerprint(RESUME_KEYS),
                "backend": info,
                "versions": _versions(),
                "consecutive_nan_skips": skips,
            },
        )
        if config.save_total_limit:
            checkpoint.prune_checkpoints(output / CHECKPOINTS, config.save_total_limit)

    with StepsLog(output / STEPS_LOG, start_step) as steps_log, _SigtermStop() as stop:
        for step in range(start_step, config.max_steps):
            number = step + 1
            batch = dataset[step - start_step]  # after set_state, index 0 is the next batch
            learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            before = _snapshot(model, optimizer) if guard else None
            faults.at("step.start", number)
            if faults.poisoned(number):
                _poison(model)
            logs = model.train_on_batch(batch, return_dict=True)
            faults.at("step.end", number)
            row = {
                "step": number,
                "loss": float(logs["loss"]),
                "ce_loss": float(logs.get("ce_loss", logs["loss"])),
                "lb_loss": float(logs.get("lb_loss", float("nan"))),
                "lr": learning_rate,
                **{key: float(value) for key, value in logs.items() if key.startswith("expert_")},
            }
            finite = bool(np.isfinite(row["loss"])) and (not guard or _all_finite(model))
            steps_log.append(
                {
                    **{key: row[key] for key in ("step", "ce_loss", "lb_loss", "lr")},
                    "skipped": not finite,
                    "windows": [
                        [int(part) for part in window_id]
                        for window_id in dataset.batch_identities(step - start_step)
                    ],
                }
            )
            skips = 0 if finite else skips + 1
            if finite:
                window.append(row)  # (log.csv averages the steps that were applied)
            else:
                _handle_non_finite(config, row["loss"], number, skips, saved, before)
            progress.update(number, [(key, row[key]) for key in shown])
            last = number == config.max_steps
            if window and (number % config.log_steps == 0 or last):
                mean = {key: float(np.mean([r[key] for r in window])) for key in LOG_COLUMNS[1:5]}
                log.append({"step": number, **mean, "seconds": time.perf_counter() - started})
                if verbose and not bar:
                    losses = "".join(f" - {key}: {mean[key]:.4f}" for key in shown)
                    print(f"step {number}/{config.max_steps}{losses} - {log[-1]['seconds']:.0f}s")
                if collapse is not None:
                    shares = {key: np.mean([r.get(key, 0.0) for r in window]) for key in window[0]}
                    collapse.check(shares, f"steps {window[0]['step']}-{number}")
                _write_log(output, log)
                window = []
            if number % config.save_steps == 0 or last:
                save(number)
                saved = number
            if stop.received:
                if saved != number:
                    save(number)
                    saved = number
                path = output / CHECKPOINTS / f"step-{number}"
                raise TrainingStopped(
                    f"Stopped by SIGTERM after step {number}; checkpoint {path} is committed. "
                    "Continue with --resume.",
                    number,
                    path,
                )
        # (A SIGTERM from here on lets the export finish: the run is complete.)
        final = output / "final"
        checkpoints.save_chronos(model, final)
        save_keras_atomically(model, final / "model.keras")
    return TrainResult(output, model, log, final)


class StepsLog:
    """`steps.jsonl`: one JSON line per training step, appended as the step ends.

    Each line holds `step`, `ce_loss`, `lb_loss` (`null` for a dense model),
    `lr` (the learning rate the step used), `skipped` (a non-finite step whose
    update was not applied, `nan_policy: skip`) and `windows`, the identities
    `[file, series, cut, cycle]` of the batch's windows (see
    `chronos_moe.data.windows.WindowId`). Opened at `resume_step`, the lines of
    later steps (written before an interruption) are dropped, the file rewritten
    atomically: the log of a resumed run equals the uninterrupted run's.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.jsonl"
    >>> with StepsLog(path, 0) as log:
    ...     for step in (1, 2, 3):
    ...         log.append({"step": step})
    >>> with StepsLog(path, 2) as log:  # resumed from a checkpoint of step 2
    ...     pass
    >>> [line["step"] for line in read_steps(path)]
    [1, 2]
    """

    def __init__(self, path: Path, resume_step: int):
        self.path = Path(path)
        kept = [line for line in read_steps(self.path) if line["step"] <= resume_step]
        if [line["step"] for line in kept] != list(range(1, resume_step + 1)):
            logger.warning(
                "%s lacks steps of the run before step %d; it continues from there.",
                self.path,
                resume_step,
            )
        write_text_atomically(self.path, "".join(_json_line(line) for line in kept))
        self.handle = open(self.path, "a")

    def append(self, record: dict[str, Any]) -> None:
        self.handle.write(_json_line(record))
        self.handle.flush()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def __enter__(self) -> StepsLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def read_steps(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a `steps.jsonl` (none if it is missing), up to a torn last line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            break  # the half-written line of a killed run
    return lines


def _json_line(record: dict[str, Any]) -> str:
    clean = {
        key: None if isinstance(value, float) and not np.isfinite(value) else value
        for key, value in record.items()
    }
    return json.dumps(clean, allow_nan=False) + "\n"


class _SigtermStop:
    """While active, a SIGTERM asks the loop to stop after the current step
    (`received` counts the signals); a second one changes nothing. Only the
    main thread can install a handler; elsewhere SIGTERM keeps its default."""

    def __init__(self) -> None:
        self.received = 0
        self.installed = False
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received += 1

    def __enter__(self) -> _SigtermStop:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)


def _snapshot(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> list[tuple]:
    """Copies of every model and optimizer variable, on their device."""
    return [(v, keras.ops.copy(v.value)) for v in [*model.variables, *optimizer.variables]]


def _restore(snapshot: list[tuple]) -> None:
    for variable, value in snapshot:
        variable.assign(value)


def _all_finite(model: keras.Model) -> bool:
    """Whether every trainable weight is finite (one reduction, one host sync)."""
    sums = [keras.ops.sum(keras.ops.cast(v.value, "float32")) for v in model.trainable_variables]
    return bool(np.isfinite(keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.stack(sums)))))


def _poison(model: keras.Model) -> None:
    """The test hook `nan:step.start`: NaN in the first trainable weight."""
    variable = model.trainable_variables[0]
    variable.assign(keras.ops.full(variable.shape, float("nan"), dtype=variable.dtype))


def _handle_non_finite(
    config: TrainingConfig, loss: float, step: int, skips: int, saved: int, before: Any
) -> None:
    """`nan_policy`: abort, or undo the step and stop after too many in a row."""
    newest = f"step-{saved}" if saved else "none"
    if config.nan_policy == "abort":
        raise FloatingPointError(
            f"The loss became {loss} at step {step}; stopping (nan_policy: abort). "
            f"The newest checkpoint is {newest}."
        )
    _restore(before)
    logger.warning(
        "The loss became %s at step %d; its update was skipped (%d in a row, nan_policy: skip).",
        loss,
        step,
        skips,
    )
    if skips >= config.max_consecutive_nan_skips:
        raise FloatingPointError(
            f"The loss was non-finite in {skips} steps in a row (steps {step - skips + 1} to "
            f"{step}); stopping (nan_policy: skip, max_consecutive_nan_skips: "
            f"{config.max_consecutive_nan_skips}). The newest checkpoint is {newest}."
        )


def _check_backend(config: TrainingConfig) -> None:
    if config.backend is not None and config.backend != backend.BACKEND:
        raise RunError(
            f"The config asks for backend {config.backend!r}, but Keras runs on "
            f"{backend.BACKEND!r}. Run `chronos-moe train --backend {config.backend}`, or set "
            f"KERAS_BACKEND={config.backend} before Keras is imported. "
            f"Received: backend={config.backend!r}"
        )


def _versions() -> dict[str, str]:
    import chronos_moe

    return {"chronos_moe": chronos_moe.__version__, "keras": keras.__version__}


def _read_log(path: Path, upto: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    return [row for row in rows if row["step"] <= upto]


def _write_log(output: Path, log: list[dict[str, float]]) -> None:
    """Rewrites `log.csv` and `log.json` whole, each atomically."""
    with io.StringIO() as text:
        writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(log)
        write_text_atomically(output / "log.csv", text.getvalue())
    write_text_atomically(output / "log.json", json.dumps(log, indent=1))


def save_keras_atomically(model: keras.Model, path: Path) -> None:
    """`model.save(path)` through a temporary `.keras` name (Keras insists on the
    suffix), renamed into place."""
    temporary = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.keras")
    try:
        model.save(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Writes `text` to a temporary file next to `path` and renames it into place."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))
