"""One training run from a `TrainingConfig`: model, optimizer and data, the
output directory and the checkpoint to resume, then `model.fit` with the
callbacks of `chronos_moe.training.guarantees` (logs, NaN guard, atomic
checkpoints, SIGTERM stop, exact resume) and the final export."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from chronos_moe import backend, checkpoints
from chronos_moe.atomic import save_keras_atomically, write_text_atomically
from chronos_moe.config import ChronosConfig
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
from chronos_moe.tokenizer import MeanScaleUniformBins
from chronos_moe.training import checkpoint, guarantees
from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.training.errors import RunError, TrainingStopped
from chronos_moe.training.lock import OutputLock
from chronos_moe.training.logs import LOG_COLUMNS, STEPS_LOG, StepsLog, read_log, read_steps
from chronos_moe.training.schedules import WarmupSchedule
from chronos_moe.training.state import CHECKPOINTS

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
    "moe_level",
    "moe_every",
    "shared_expert",
    "num_experts",
    "num_active_experts",
    "router_hidden_dim",
    "expert_hidden_dim",
    "router_input_norm",
    "seed",
)
MIXED_PRECISION_POLICY = "mixed_bfloat16"


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
        if not isinstance(base, (ChronosT5, ChronosMoE)):
            raise ConfigError(
                f"`model_id` {config.model_id!r} is a {type(base).__name__} checkpoint; "
                "training starts from Chronos T5 checkpoints only so far."
            )
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
        router_input_norm=config.router_input_norm,
        load_balancing_mode=config.load_balancing_mode,
        load_balancing_window=config.load_balancing_window,
        level=config.moe_level,
        moe_every=config.moe_every,
        shared_expert=config.shared_expert,
        bias_update_rate=config.bias_update_rate,
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
    callbacks: Sequence[keras.callbacks.Callback] = (),
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
        callbacks: `keras.callbacks.Callback`s that run after the guarantees'
            at every step (such as a tuner's pruning callback, see
            `chronos_moe.tuning`); an exception they raise ends the run as a
            failed one. Defaults to none.

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
            return _run(config, dataset, model, output, start, verbose, callbacks)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    config: TrainingConfig,
    dataset: Any,
    model: ChronosT5 | ChronosMoE,
    output: Path,
    start: _Start,
    verbose: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """The body of `train` once the output directory is checked and locked: `fit`
    with the callbacks of `chronos_moe.training.guarantees`, then the export."""
    model.compile(optimizer=build_optimizer(config), jit_compile=backend.JIT_COMPILE)
    run = guarantees.TrainingRun(
        output,
        dataset,
        config.max_steps,
        resume=start.checkpoint or False,
        config=config.to_dict(),
        config_hash=config.fingerprint(RESUME_KEYS),
    )
    run.close_at_end = False  # a SIGTERM during the export below is only counted
    composed = guarantees.compose(
        run,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        log_steps=config.log_steps,
        nan_policy=config.nan_policy,
        max_consecutive_nan_skips=config.max_consecutive_nan_skips,
        max_expert_share=config.max_expert_share if config.use_moe else None,
        progress=verbose,
    )
    try:
        run.begin(model)  # restores the checkpoint before anything is written
        write_text_atomically(output / "config.yaml", config.to_yaml())
        # What each data file held and why series were dropped (per file and reason).
        write_text_atomically(output / "data_report.json", json.dumps(dataset.report.to_dict()))
        if verbose:
            info = backend.backend_info()
            print(
                f"chronos-moe train: backend {info['backend']} on {info['device']}"
                + (f", resuming at step {run.step}" if run.step else "")
            )
        if run.step < config.max_steps:
            steps = config.max_steps - run.step
            model.fit(
                dataset,
                epochs=1,
                steps_per_epoch=steps,
                shuffle=False,
                verbose=0,
                callbacks=[*composed, *callbacks],
            )
        final = output / "final"
        checkpoints.save_chronos(model, final)
        save_keras_atomically(model, final / "model.keras")
    finally:
        run.close()
    log = next(c.log for c in composed if isinstance(c, guarantees.LossLog))
    return TrainResult(output, model, log or read_log(output / "log.csv", upto=run.step), final)


def _check_backend(config: TrainingConfig) -> None:
    if config.backend is not None and config.backend != backend.BACKEND:
        raise RunError(
            f"The config asks for backend {config.backend!r}, but Keras runs on "
            f"{backend.BACKEND!r}. Run `chronos-moe train --backend {config.backend}`, or set "
            f"KERAS_BACKEND={config.backend} before Keras is imported. "
            f"Received: backend={config.backend!r}"
        )


# Names that moved (kept for their importers): the run's files and errors.
__all__ = [
    "CHECKPOINTS",
    "LOG_COLUMNS",
    "RESUME_KEYS",
    "STEPS_LOG",
    "RunError",
    "StepsLog",
    "TrainResult",
    "TrainingStopped",
    "build_dataset",
    "build_model",
    "build_optimizer",
    "read_steps",
    "save_keras_atomically",
    "train",
    "write_text_atomically",
]
