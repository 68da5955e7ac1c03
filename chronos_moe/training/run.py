"""One training run from a `TrainingConfig`: model, optimizer and data, the
output directory and the checkpoint to resume, then `model.fit` with the
callbacks of `chronos_moe.training.guarantees` (logs, NaN guard, atomic
checkpoints, SIGTERM stop, exact resume) and the final export."""

from __future__ import annotations

import contextlib
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

from chronos_moe import backend, checkpoints, distribution
from chronos_moe.atomic import save_keras_atomically, write_text_atomically
from chronos_moe.config import T5_PRESETS
from chronos_moe.errors import DistributionBackendError, IndivisibleBatchError
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
from chronos_moe.training import checkpoint, guarantees
from chronos_moe.training.config import MESH_KEYS, T5_ONLY_KEYS, ConfigError, TrainingConfig
from chronos_moe.training.errors import RunError, TrainingStopped
from chronos_moe.training.lock import OutputLock
from chronos_moe.training.logs import LOG_COLUMNS, STEPS_LOG, StepsLog, read_log, read_steps
from chronos_moe.training.schedules import WarmupSchedule
from chronos_moe.training.state import CHECKPOINTS
from chronos_moe.validation import cluster_settings

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
# Chronos-Bolt runs also keep these (T5 runs do not list them, so that their
# checkpoints written before Bolt training existed still resume).
BOLT_RESUME_KEYS = (
    "model_family",
    "input_patch_size",
    "input_patch_stride",
    "quantiles",
    "use_reg_token",
)
MIXED_PRECISION_POLICY = "mixed_bfloat16"


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    model: ChronosT5 | ChronosBolt | ChronosMoE
    log: list[dict[str, float]]
    final_dir: Path


def resume_keys(model_family: str) -> tuple[str, ...]:
    """The settings a run of this model family keeps on resume (those of
    `RESUME_KEYS` it reads, and for Chronos-Bolt `BOLT_RESUME_KEYS`)."""
    if model_family == "t5":
        return RESUME_KEYS
    return tuple(k for k in RESUME_KEYS if k not in T5_ONLY_KEYS) + BOLT_RESUME_KEYS


def build_model(config: TrainingConfig) -> ChronosT5 | ChronosBolt | ChronosMoE:
    """A fresh (size preset) or pretrained (`model_id`) Chronos T5 or
    Chronos-Bolt model (`model_family`), wrapped in experts when `use_moe`."""
    keras.utils.set_random_seed(config.seed)
    base = _bolt_model(config) if config.model_family == "bolt" else _t5_model(config)
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


def _t5_model(config: TrainingConfig) -> ChronosT5 | ChronosMoE:
    """`build_model`'s model before the experts, for `model_family: t5`."""
    chronos = config.forecasting_config
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
                "set `model_family: bolt` to train it (model_family='t5' trains Chronos T5)."
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
    return base


def _bolt_model(config: TrainingConfig) -> ChronosBolt | ChronosMoE:
    """`build_model` for `model_family: bolt`: a size preset with the config's
    `chronos_config`, or the `model_id` checkpoint, whose patches, quantile
    levels and horizon the config must not contradict (its context length is
    the config's)."""
    if config.random_init:
        return ChronosBolt(
            **T5_PRESETS[config.model_size],
            initializer_factor=config.initializer_factor,
            chronos_config=config.chronos_config,
        )
    model = checkpoints.load_chronos(config.model_id)
    dense = model.base if isinstance(model, ChronosMoE) else model
    if not isinstance(dense, ChronosBolt):
        raise ConfigError(
            f"`model_id` {config.model_id!r} is a {type(model).__name__} checkpoint; "
            "model_family='bolt' trains Chronos-Bolt checkpoints (set `model_family: t5`)."
        )
    if dense is not model and config.use_moe:
        raise ConfigError(
            f"`model_id` {config.model_id!r} is already a ChronosMoE model; "
            "continue training it with `use_moe: false` or start from a dense checkpoint."
        )
    own = dense.chronos_config.to_dict()
    clashes = [
        f"{key}={value!r} (checkpoint: {own[key]!r})"
        for key, value in config.chronos_config.items()
        if key in BOLT_RESUME_KEYS and value != own[key]
    ]
    if config.prediction_length > own["prediction_length"]:
        clashes.append(
            f"prediction_length={config.prediction_length} (checkpoint: at most "
            f"{own['prediction_length']}; shorter targets are padded as the reference does)"
        )
    if clashes:
        raise ConfigError(
            f"The config contradicts the Chronos-Bolt checkpoint {config.model_id!r}: "
            + "; ".join(clashes)
        )
    dense.chronos_config = dataclasses.replace(
        dense.chronos_config, context_length=config.context_length
    )
    return model


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
    """The training (or validation) stream of windows: tokenized for Chronos T5,
    values for Chronos-Bolt."""
    from chronos_moe.data import ChronosDataset

    return ChronosDataset(
        paths or config.training_data_paths,
        config.forecasting_config,
        context_length=config.context_length,
        prediction_length=config.prediction_length,
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
    keys = resume_keys(config.model_family)
    if old.get("model_family") == "bolt":
        keys = resume_keys("bolt")
    changed = [
        f"{key}: {old.get(key, absent)!r} -> {getattr(config, key)!r}"
        for key in keys
        if old.get(key, absent) != getattr(config, key)
    ]
    if changed:
        raise RunError(
            f"The config changed since the checkpoint {path}; refusing to resume (old -> new): "
            + "; ".join(changed)
        )
    if state["config_hash"] != config.fingerprint(keys):
        raise RunError(
            f"{path / 'trainer_state.json'}: config_hash {state['config_hash']!r} is not the "
            f"fingerprint of its own config ({config.fingerprint(keys)!r}); refusing to "
            "resume from an edited trainer state."
        )
    if _layout(old.get("distribution")) != _layout(config.distribution):
        logger.warning(
            f"Resuming on another device mesh ({old.get('distribution')} -> "
            f"{config.distribution}): the run continues from the same weights and optimizer "
            "state, but not bit for bit (the gradients are summed in another order)."
        )
    if old.get("max_steps") != config.max_steps:
        message = f"max_steps changed from {old.get('max_steps')} to {config.max_steps} on resume."
        logger.warning(message)


def _layout(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a `distribution:` block that decides how sums are taken: the
    mesh and the number of processes (not where the coordinator listens)."""
    settings = settings or {}
    return {key: settings.get(key) for key in (*MESH_KEYS, "num_processes")}


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

        With `config.distribution` (JAX), the model is built, trained and exported
        under that device mesh (`chronos_moe.distribution.expert_distribution`; a
        named `DistributionError` on torch or for a mesh larger than the devices
        present, before anything is read or written); checkpoints load on any mesh.
        With its process keys (or Keras' `KERAS_DISTRIBUTION_*` variables) the mesh
        spans several processes (hosts): each joins through
        `keras.distribution.initialize`, reads its slice of every global batch,
        and process 0 alone takes the lock and writes (named errors
        `ProcessSettingsError`, `ProcessMeshError`, `IndivisibleBatchError` first).

    Under `torchrun` (torch; `chronos_moe.backend.torch_ddp`) each process is a
    data-parallel replica: `per_device_train_batch_size` is the global batch,
    each rank trains on its slice of it, the loss statistics and gradients are
    all-reduced so that every rank makes the one-process update of the global
    batch, and rank 0 alone takes the lock and writes (logs, checkpoints,
    `final/`). A process count that does not divide the batch
    (`IndivisibleBatchError`) or a `distribution` (`DistributionBackendError`)
    is refused first.

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
    processes = _start_processes(config)  # torchrun's or a multi-host run's: (index, count)
    mesh = _distribution(config, processes[1])  # the backend and the devices, before the lock
    output = Path(config.output_dir)
    writes = processes[0] == 0  # rank 0 writes; the others train beside it
    # Order: the config is valid (TrainingConfig); take the lock (a second run on this
    # directory exits here, before any data or model is loaded); check the directory
    # and the checkpoint to resume (cheap: JSON and checksums); then read the data
    # (bad data fails before the model is built); then build the model.
    with OutputLock(output) if writes else contextlib.nullcontext():
        start = _on_rank_zero(
            _prepare_output,
            config,
            resume,
            overwrite,
            None if resume_from is None else Path(resume_from),
            verbose and writes,
        )
        dataset = build_dataset(config)
        dataset.shard(*processes)
        previous_policy = keras.mixed_precision.global_policy()
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICY)
        # Variables take their layout when created: the distribution is set
        # before the model is built, and stays set for `fit` and the export.
        scope = mesh.scope() if mesh is not None else contextlib.nullcontext()
        try:
            with scope:
                model = build_model(config)
                distribution.check_expert_sharding(model)  # a dense model too
                if start.clear and writes:
                    _clear_output(output)
                return _run(config, dataset, model, output, start, verbose and writes, callbacks)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _run(
    config: TrainingConfig,
    dataset: Any,
    model: ChronosT5 | ChronosBolt | ChronosMoE,
    output: Path,
    start: _Start,
    verbose: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """The body of `train` once the output directory is checked and locked: `fit`
    with the callbacks of `chronos_moe.training.guarantees`, then the export."""
    model.compile(optimizer=build_optimizer(config), jit_compile=backend.JIT_COMPILE)
    backend.data_parallel(model)  # torch DDP: gradients and loss statistics over all ranks
    run = guarantees.TrainingRun(
        output,
        dataset,
        config.max_steps,
        resume=start.checkpoint or False,
        config=config.to_dict(),
        config_hash=config.fingerprint(resume_keys(config.model_family)),
    )
    run.close_at_end = False  # a SIGTERM during the export below is only counted
    composed = guarantees.compose(
        run,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        log_steps=config.log_steps,
        nan_policy=config.nan_policy,
        max_consecutive_nan_skips=config.max_consecutive_nan_skips,
        # (The shares are the global batch's on every rank: rank 0 warns.)
        max_expert_share=config.max_expert_share if config.use_moe and run.writes else None,
        progress=verbose,
    )
    try:
        run.begin(model)  # restores the checkpoint before anything is written
        if run.writes:
            write_text_atomically(output / "config.yaml", config.to_yaml())
            # What each data file held and why series were dropped (per file and reason).
            report = json.dumps(dataset.report.to_dict())
            write_text_atomically(output / "data_report.json", report)
        if verbose:
            info = backend.backend_info()
            mesh = config.mesh_shape
            processes = backend.process_count()
            print(
                f"chronos-moe train: backend {info['backend']} on {info['device']}"
                + (f", mesh data {mesh[0]} × expert {mesh[1]}" if mesh else "")
                + (f", {processes} processes" if processes > 1 else "")
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
        if run.writes:
            checkpoints.save_chronos(model, final)
            with distribution.process_local():  # process 0 alone (see there)
                save_keras_atomically(model, final / "model.keras")
        backend.barrier()  # the run ends for every rank once the export is in place
    finally:
        run.close()
    log = next(c.log for c in composed if isinstance(c, guarantees.LossLog))
    return TrainResult(output, model, log or read_log(output / "log.csv", upto=run.step), final)


def _distribution(config: TrainingConfig, processes: int):
    """The `keras.distribution` of `config.distribution` (`None` without one,
    unless JAX runs several processes): a named error on torch, when the mesh
    needs more devices than are present, or when it does not suit the
    `processes` of a multi-host run (`ProcessMeshError`: it must span them
    all, whole replicas per process)."""
    # (torch's processes under torchrun are replicas without a mesh.)
    if config.mesh_shape is None and (processes == 1 or not backend.KERAS_DISTRIBUTION):
        return None
    mesh = distribution.expert_distribution(
        *(config.mesh_shape or (1, 1)),
        num_experts=config.num_experts if config.use_moe else None,
        batch_size=config.per_device_train_batch_size,
    )
    if processes > 1:
        distribution.check_processes(mesh.device_mesh)
        # Each process reads its own rows already (`ChronosDataset.shard`); Keras'
        # auto-sharding would split only a tf.data stream, and refuses any other.
        mesh.auto_shard_dataset = False
    return mesh


def _start_processes(config: TrainingConfig) -> tuple[int, int]:
    """`(index, count)` of this process: a torch process group under
    `torchrun` (started from its environment), the processes of a multi-host
    JAX run (`distribution`'s process keys or Keras' `KERAS_DISTRIBUTION_*`
    variables, see `chronos_moe.validation.cluster_settings`), else `(0, 1)`.
    Named errors before anything is read: bad multi-host settings
    (`ProcessSettingsError`), `distribution` (the JAX mesh) set under
    torchrun, a process count that does not divide the global batch."""
    cluster = None
    if backend.KERAS_DISTRIBUTION:
        cluster = cluster_settings(config.distribution, config.per_device_train_batch_size)
    if not backend.initialize_processes(cluster):
        return 0, 1
    count = backend.process_count()
    if config.distribution is not None and not backend.KERAS_DISTRIBUTION:
        raise DistributionBackendError(
            "`distribution` is the JAX device mesh (keras.distribution); under torchrun the "
            f"{count} processes are the data-parallel replicas already. Remove `distribution` "
            "from the config, or run it with --backend jax without torchrun. "
            f"Received: distribution={config.distribution}, processes={count}"
        )
    if config.per_device_train_batch_size % count:
        raise IndivisibleBatchError(
            "The number of processes (torchrun's, or a multi-host run's) must divide the "
            "global batch (`per_device_train_batch_size`): each takes batch / processes "
            f"series of every step. Received: processes={count}, "
            f"per_device_train_batch_size={config.per_device_train_batch_size}"
        )
    return backend.process_index(), count


def _on_rank_zero(function, *args):
    """`function(*args)` on rank 0, its result (or its error, as a `RunError`)
    on every rank: one process decides, and nothing races."""
    result, error = None, None
    if backend.process_index() == 0:
        try:
            result = function(*args)
        except Exception as raised:  # handed to the other ranks, then raised here
            error = raised
    failure = backend.broadcast_object(None if error is None else f"{error}")
    if error is not None:
        raise error
    if failure is not None:
        raise RunError(f"rank 0 stopped the run: {failure}")
    return backend.broadcast_object(result)


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
    "BOLT_RESUME_KEYS",
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
