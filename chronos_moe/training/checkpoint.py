"""Resumable training checkpoints: complete or absent, never torn.

A checkpoint is a directory `step-N/` holding

* `model.safetensors`: every model variable (weights and the dropout/router
  seed-generator states), keyed `"<index>:<path>"` in `model.variables` order,
* `optimizer.safetensors`: every optimizer variable (iterations, moments), same keying,
* `trainer_state.json`: step, data-stream state, config fingerprint, versions,
* `manifest.json`, written last: size and sha256 of each file above.

It is written as `step-N.tmp-<id>/`, every file and the directory fsynced, and
renamed to `step-N/` only when complete. Resume takes the newest `step-N` whose
manifest verifies. All files are backend-neutral (numpy arrays in safetensors,
JSON), so a checkpoint written under torch resumes under JAX and vice versa.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import keras
import numpy as np
import safetensors.numpy

from chronos_moe.checkpoints import read_safetensors
from chronos_moe.training import faults

logger = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step-(\d+)$")
TEMP_MARKER = ".tmp-"
FILES = ("model.safetensors", "optimizer.safetensors", "trainer_state.json")
MANIFEST = "manifest.json"


class CheckpointCorrupt(ValueError):
    """A checkpoint whose files do not match its manifest (or lack one)."""


def _variables_to_arrays(variables) -> dict[str, np.ndarray]:
    return {
        # np.array, not np.ascontiguousarray: that one turns scalars (the optimizer's
        # iteration count) into shape (1,).
        f"{index:05d}:{variable.path}": np.array(keras.ops.convert_to_numpy(variable), order="C")
        for index, variable in enumerate(variables)
    }


def _assign_arrays(variables, arrays: dict[str, np.ndarray], what: str, source: Path) -> None:
    if len(arrays) != len(variables):
        raise CheckpointCorrupt(
            f"{source}: holds {len(arrays)} {what} variables, the run has {len(variables)}. "
            "Was the model or optimizer configuration changed?"
        )
    ordered = sorted(arrays.items())
    for variable, (key, value) in zip(variables, ordered, strict=True):
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointCorrupt(
                f"{source}: {what} variable {key} has shape {value.shape}, "
                f"the run's {variable.path} has {tuple(variable.shape)}."
            )
    for variable, (_, value) in zip(variables, ordered, strict=True):
        variable.assign(value.astype(variable.dtype))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (a full disk, an I/O error): nothing
    of it was committed, and the message names the step and the cause."""


class NonFiniteCheckpoint(FloatingPointError):
    """A checkpoint refused because a model or optimizer variable holds NaN or ±inf."""


def _check_finite(arrays: dict[str, np.ndarray], what: str, step: int) -> None:
    for key, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise NonFiniteCheckpoint(
                f"Refusing to save checkpoint step-{step}: {what} variable {key} holds "
                f"{int((~np.isfinite(value)).sum())} non-finite value(s)."
            )


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    trainer_state: dict[str, Any],
) -> Path:
    """Writes `output_dir/step-<step>/` atomically and returns its path.

    A variable holding NaN or ±inf is refused (`NonFiniteCheckpoint`) before
    anything is written. An `OSError` while writing (a full disk, an I/O error)
    removes the temporary directory and is raised as a `CheckpointSaveError`
    naming the step and the cause; the checkpoints already committed are not
    touched. The test-only fault points of `chronos_moe.training.faults` sit
    between the writes.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"step-{step}"
    temporary = output_dir / f"step-{step}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
    model_arrays = _variables_to_arrays(model.variables)
    optimizer_arrays = _variables_to_arrays(optimizer.variables)
    _check_finite(model_arrays, "model", step)
    _check_finite(optimizer_arrays, "optimizer", step)
    try:
        temporary.mkdir(parents=True)
        faults.at("save.mkdir", step)
        safetensors.numpy.save_file(model_arrays, str(temporary / "model.safetensors"))
        faults.at("save.model", step)
        safetensors.numpy.save_file(optimizer_arrays, str(temporary / "optimizer.safetensors"))
        faults.at("save.optimizer", step)
        (temporary / "trainer_state.json").write_text(
            json.dumps({**trainer_state, "step": step}, indent=1, sort_keys=True)
        )
        faults.at("save.state", step)
        manifest = {}
        for name in FILES:
            _fsync_file(temporary / name)
            manifest[name] = {
                "size": (temporary / name).stat().st_size,
                "sha256": _sha256(temporary / name),
            }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _fsync_file(temporary / MANIFEST)
        _fsync_directory(temporary)
        faults.at("save.manifest", step)
        if final.exists():  # an older save of the same step (a re-run): set it aside whole
            _remove_aside(final)
        faults.at("save.rename", step)
        os.rename(temporary, final)
        _fsync_directory(output_dir)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        committed = [s for s, _ in list_checkpoints(output_dir) if s != step]
        failure = CheckpointSaveError(
            f"Saving checkpoint step-{step} failed: {error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "")
            + ". Nothing of it was committed; the newest checkpoint is "
            + (f"step-{committed[-1]}." if committed else "none yet.")
        )
        failure.errno = error.errno
        raise failure from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    faults.at("save.committed", step)
    return final


def _remove_aside(path: Path) -> None:
    """Renames `path` to a temporary name first, so that an interrupted deletion
    leaves a directory `remove_torn` deletes, never a half-deleted `step-N/`."""
    aside = path.with_name(f"{path.name}{TEMP_MARKER}old-{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    match = STEP_PATTERN.match(path.name)
    faults.at("prune", int(match.group(1)) if match else None)
    shutil.rmtree(aside, ignore_errors=True)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raises `CheckpointCorrupt` naming the file and the failed check."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointCorrupt(f"{path}: no {MANIFEST} (the save did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointCorrupt(f"{manifest_path}: not valid JSON ({error})") from error
    for name in FILES:
        file = path / name
        if name not in manifest:
            raise CheckpointCorrupt(f"{manifest_path}: lists no {name}")
        if not file.is_file():
            raise CheckpointCorrupt(f"{file}: missing")
        if file.stat().st_size != manifest[name]["size"]:
            raise CheckpointCorrupt(
                f"{file}: size {file.stat().st_size} bytes, manifest says {manifest[name]['size']}"
            )
        if _sha256(file) != manifest[name]["sha256"]:
            raise CheckpointCorrupt(f"{file}: sha256 does not match the manifest")


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of every `step-N` directory, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = STEP_PATTERN.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def remove_torn(output_dir: str | os.PathLike) -> list[Path]:
    """Deletes `step-N.tmp-*` directories left by an interrupted save."""
    output_dir = Path(output_dir)
    torn = [entry for entry in output_dir.glob(f"step-*{TEMP_MARKER}*") if entry.is_dir()]
    for entry in torn:
        logger.warning("Removing %s, left by an interrupted checkpoint save or deletion.", entry)
        shutil.rmtree(entry, ignore_errors=True)
    return torn


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint that verifies; corrupt newer ones are named in the log."""
    for step, path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointCorrupt as error:
            logger.warning("Skipping checkpoint step %d: %s", step, error)
            continue
        return path
    return None


def load_checkpoint(
    path: str | os.PathLike, model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> dict[str, Any]:
    """Verifies `path`, restores model and optimizer variables, returns the
    trainer state."""
    path = Path(path)
    verify_checkpoint(path)
    # The validating reader: a corrupt file is a CheckpointError naming it.
    model_arrays = read_safetensors(path / "model.safetensors")
    optimizer_arrays = read_safetensors(path / "optimizer.safetensors")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    _assign_arrays(model.variables, model_arrays, "model", path)
    _assign_arrays(optimizer.variables, optimizer_arrays, "optimizer", path)
    return json.loads((path / "trainer_state.json").read_text())


def global_rng_state() -> dict[str, Any]:
    """The backend's global random state, which no model variable holds, as JSON.

    Keras' torch backend draws the masks of a `Dropout` layer built without a
    seed from torch's global generator (JAX draws every mask from the layers'
    seed-generator variables, which the checkpoint holds), so an exact resume
    on torch restores that generator too.

    Example:

    >>> state = global_rng_state()
    >>> set_global_rng_state(state)  # a no-op on JAX
    """
    if keras.backend.backend() != "torch":
        return {}
    import torch

    state = {"torch_cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restores a `global_rng_state()`; a state of another backend is ignored."""
    if keras.backend.backend() != "torch" or "torch_cpu" not in state:
        return
    import torch

    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]]
        )


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> None:
    """Deletes the oldest committed checkpoints so that `keep` remain, oldest
    first; each is renamed aside before it is deleted (see `remove_torn`)."""
    existing = list_checkpoints(output_dir)
    for _, path in existing[: max(len(existing) - keep, 0)]:
        _remove_aside(path)
