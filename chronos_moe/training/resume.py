"""Where a training run starts: the settings a resume must keep
(`RESUME_KEYS`), the output directory's checks and the checkpoint to resume
from (`prepare_output`), refused when it was written under another backend or
other settings (`check_resume_compatible`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from chronos_moe import backend
from chronos_moe.training import checkpoint
from chronos_moe.training.config import MESH_KEYS, T5_ONLY_KEYS, TrainingConfig
from chronos_moe.training.errors import RunError
from chronos_moe.training.state import CHECKPOINTS

# The run's warnings keep the logger name they were always filtered on.
logger = logging.getLogger("chronos_moe.training.run")

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


def resume_keys(model_family: str) -> tuple[str, ...]:
    """The settings a run of this model family keeps on resume (those of
    `RESUME_KEYS` it reads, and for Chronos-Bolt `BOLT_RESUME_KEYS`)."""
    if model_family == "t5":
        return RESUME_KEYS
    return tuple(k for k in RESUME_KEYS if k not in T5_ONLY_KEYS) + BOLT_RESUME_KEYS


@dataclasses.dataclass
class Start:
    """Where a run starts: a fresh directory, or a checkpoint."""

    clear: bool = False  # --overwrite: delete the other run's files (once data and model are built)
    checkpoint: Path | None = None


def prepare_output(
    config: TrainingConfig, resume: bool, overwrite: bool, resume_from: Path | None, verbose: bool
) -> Start:
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
        check_resume_compatible(config, state, resume_from)
        return Start(checkpoint=Path(resume_from))
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
        check_resume_compatible(config, state, latest)
        return Start(checkpoint=latest)
    if occupied and not overwrite:
        raise RunError(
            f"{output} already holds files of another run. Use --resume to continue it or "
            "--overwrite to replace it."
        )
    return Start(clear=occupied)


def clear_output(output: Path) -> None:
    """Deletes everything in `output` but the run's lock (`--overwrite`)."""
    for entry in output.iterdir():
        if entry.name != ".lock":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def check_resume_compatible(config: TrainingConfig, state: dict[str, Any], path: Path) -> None:
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
