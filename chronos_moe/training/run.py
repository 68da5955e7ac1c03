"""One training run from a `TrainingConfig`: the output directory and the
checkpoint to resume (`chronos_moe.training.resume`), the model, optimizer and
data (`chronos_moe.training.builders`), then `model.fit` with the callbacks of
`chronos_moe.training.guarantees` (logs, NaN guard, atomic checkpoints, SIGTERM
stop, exact resume) and the final export."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from chronos_moe import backend, checkpoints, distribution
from chronos_moe.atomic import save_keras_atomically, write_text_atomically
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.training import guarantees
from chronos_moe.training.builders import build_dataset, build_model, build_optimizer
from chronos_moe.training.config import TrainingConfig
from chronos_moe.training.errors import RunError, TrainingStopped
from chronos_moe.training.lock import OutputLock
from chronos_moe.training.logs import LOG_COLUMNS, STEPS_LOG, StepsLog, read_log, read_steps
from chronos_moe.training.processes import (
    check_backend,
    mesh_distribution,
    on_rank_zero,
    start_processes,
)
from chronos_moe.training.resume import (
    BOLT_RESUME_KEYS,
    RESUME_KEYS,
    Start,
    clear_output,
    prepare_output,
    resume_keys,
)
from chronos_moe.training.state import CHECKPOINTS

MIXED_PRECISION_POLICY = "mixed_bfloat16"


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    model: ChronosT5 | ChronosBolt | ChronosMoE
    log: list[dict[str, float]]
    final_dir: Path


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
    check_backend(config)
    processes = start_processes(config)  # torchrun's or a multi-host run's: (index, count)
    mesh = mesh_distribution(config, processes[1])  # the backend and the devices, before the lock
    output = Path(config.output_dir)
    writes = processes[0] == 0  # rank 0 writes; the others train beside it
    # Order: the config is valid (TrainingConfig); take the lock (a second run on this
    # directory exits here, before any data or model is loaded); check the directory
    # and the checkpoint to resume (cheap: JSON and checksums); then read the data
    # (bad data fails before the model is built); then build the model.
    with OutputLock(output) if writes else contextlib.nullcontext():
        # (as a dict: what goes between processes is JSON on JAX)
        start = on_rank_zero(
            lambda *arguments: dataclasses.asdict(prepare_output(*arguments)),
            config,
            resume,
            overwrite,
            None if resume_from is None else Path(resume_from),
            verbose and writes,
        )
        start = Start(**start)
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
                    clear_output(output)
                return _run(config, dataset, model, output, start, verbose and writes, callbacks)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _banner(config: TrainingConfig, step: int) -> str:
    """The line a verbose run starts with: backend, device, mesh, processes."""
    info = backend.backend_info()
    mesh = config.mesh_shape
    processes = backend.process_count()
    return (
        f"chronos-moe train: backend {info['backend']} on {info['device']}"
        + (f", mesh data {mesh[0]} × expert {mesh[1]}" if mesh else "")
        + (f", {processes} processes" if processes > 1 else "")
        + (f", resuming at step {step}" if step else "")
    )


def _run(
    config: TrainingConfig,
    dataset: Any,
    model: ChronosT5 | ChronosBolt | ChronosMoE,
    output: Path,
    start: Start,
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
            print(_banner(config, run.step))
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
    "resume_keys",
    "save_keras_atomically",
    "train",
    "write_text_atomically",
]
