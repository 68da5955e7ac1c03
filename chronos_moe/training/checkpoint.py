"""Resumable training checkpoints: complete or absent, never torn.

A checkpoint is a directory `step-N/` holding

* `model.safetensors`: every model variable (weights and the dropout/router
  seed-generator states), keyed `"<index>:<path>"` in `model.variables` order,
* `optimizer.safetensors`: every optimizer variable (iterations, moments), same keying,
* `trainer_state.json`: step, optimizer iterations (the learning-rate position),
  RNG state, data-stream state, config and config fingerprint, backend, versions,
* `manifest.json`, written last: size and sha256 of each file above.

It is written as `step-N.tmp-<id>/`, every file and the directory fsynced, and
renamed to `step-N/` only when complete. Every part is required: a checkpoint
that lacks one (a missing file, a trainer-state key, a variable) is refused
naming the part, never loaded with that part left at its initial value.
Resume takes the newest `step-N` that verifies (`find_resumable`) and names each
newer one it skipped and why. All files are backend-neutral (numpy arrays in
safetensors, JSON); `chronos_moe.training.run` refuses to resume on another
backend than the one that wrote the checkpoint (the random streams differ).
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

from chronos_moe.atomic import fsync_directory, fsync_file
from chronos_moe.backend import global_rng_state, set_global_rng_state  # noqa: F401 (re-exported)
from chronos_moe.layers.common import sublayers
from chronos_moe.safetensors_reader import read_safetensors
from chronos_moe.training import faults

logger = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step-(\d+)$")
TEMP_MARKER = ".tmp-"
FILES = ("model.safetensors", "optimizer.safetensors", "trainer_state.json")
MANIFEST = "manifest.json"
# What each file of a checkpoint holds (named when one is missing or corrupt).
PARTS = {
    "model.safetensors": "model weights, with the dropout and router seed-generator states",
    "optimizer.safetensors": "optimizer state",
    "trainer_state.json": "trainer state",
    MANIFEST: "manifest",
}
# The keys of `trainer_state.json` a training run needs (`verify_checkpoint(path,
# required_state=TRAINER_STATE_PARTS)`), and what each one is.
TRAINER_STATE_PARTS = {
    "step": "trainer step",
    "optimizer_iterations": "learning-rate position (the optimizer's iteration count)",
    "rng": "RNG state",
    "data": "data cursor (stream position and shuffle state)",
    "config": "run config",
    "config_hash": "config fingerprint",
    "backend": "backend that wrote it",
    "versions": "package versions",
}


class CheckpointCorrupt(ValueError):
    """A checkpoint whose files do not match its manifest (or lack one), or that
    lacks a part; the message names the file, the part and the failed check."""


def _part(name: str) -> str:
    return f"{name} ({PARTS[name]})" if name in PARTS else name


def _seed_owners(model: Any) -> dict[int, str]:
    """`id(seed-generator state variable) -> path of the layer that draws from it`."""
    owners: dict[int, str] = {}
    layers = [model, *sublayers(model)] if isinstance(model, keras.Layer) else []
    for layer in layers:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                owners[id(value.state)] = getattr(layer, "path", None) or layer.name
    return owners


def _variable_part(path: str) -> str:
    """What a model or optimizer variable is, for the message naming a missing one."""
    if "seed_generator" in path:
        return "router RNG state" if "router" in path else "RNG state"
    if "router" in path:
        return "router"
    if path.endswith("iteration") or path.endswith("iterations"):
        return "learning-rate position"
    return "weights"


def _variables_to_arrays(variables) -> dict[str, np.ndarray]:
    return {
        # np.array, not np.ascontiguousarray: that one turns scalars (the optimizer's
        # iteration count) into shape (1,).
        f"{index:05d}:{variable.path}": np.array(keras.ops.convert_to_numpy(variable), order="C")
        for index, variable in enumerate(variables)
    }


def _assign_arrays(
    variables, arrays: dict[str, np.ndarray], what: str, source: Path, owners=None
) -> None:
    by_index: dict[int, str] = {}
    for key in arrays:
        prefix = key.split(":", 1)[0]
        if not prefix.isdigit():
            raise CheckpointCorrupt(
                f"{source}: {what} tensor {key!r} is not keyed '<index>:<path>'"
            )
        by_index[int(prefix)] = key
    missing = [index for index in range(len(variables)) if index not in by_index]
    if missing:
        owners = owners or {}

        def name(variable) -> str:
            path = variable.path
            if id(variable) in owners:  # a seed generator: name the layer drawing from it
                path = f"{path} of {owners[id(variable)]}"
            return f"{path} ({_variable_part(path)})"

        names = ", ".join(f"{index:05d}:{name(variables[index])}" for index in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointCorrupt(
            f"{source}: lacks {len(missing)} of the run's {len(variables)} {what} variables: "
            f"{names}{more}. Refusing to resume with them left at their initial values."
        )
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
            fsync_file(temporary / name)
            manifest[name] = {
                "size": (temporary / name).stat().st_size,
                "sha256": _sha256(temporary / name),
            }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        fsync_file(temporary / MANIFEST)
        fsync_directory(temporary)
        faults.at("save.manifest", step)
        if final.exists():  # an older save of the same step (a re-run): set it aside whole
            _remove_aside(final)
        faults.at("save.rename", step)
        os.rename(temporary, final)
        fsync_directory(output_dir)
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


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else is a `CheckpointCorrupt` naming it."""
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointCorrupt(f"{path}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointCorrupt(f"{path}: not a JSON object")
    return value


def verify_checkpoint(path: str | os.PathLike, required_state: Any = ()) -> dict[str, Any]:
    """Checks a checkpoint against its manifest and returns its trainer state.

    Checks, in order: the manifest exists and is a JSON object listing every
    file; each file exists, has the manifest's size and sha256; the trainer
    state is a JSON object holding every key of `required_state` (e.g.
    `TRAINER_STATE_PARTS`), whose `step` is the directory's.

    Raises:
        CheckpointCorrupt: naming the file (and the part it holds) and the failed check.

    Example:

    >>> import tempfile
    >>> try:
    ...     verify_checkpoint(tempfile.mkdtemp())
    ... except CheckpointCorrupt as error:
    ...     print(str(error).split(": ", 1)[1])
    no manifest.json (the save did not finish)
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointCorrupt(f"{path}: no {MANIFEST} (the save did not finish)")
    manifest = _read_json_object(manifest_path)
    for name in FILES:
        file = path / name
        entry = manifest.get(name)
        if entry is None:
            raise CheckpointCorrupt(f"{manifest_path}: lists no {_part(name)}")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise CheckpointCorrupt(f"{manifest_path}: the entry of {name} is malformed: {entry!r}")
        if not file.is_file():
            raise CheckpointCorrupt(f"{file}: missing: the {PARTS[name]}")
        if file.stat().st_size != entry["size"]:
            raise CheckpointCorrupt(
                f"{file}: size {file.stat().st_size} bytes, manifest says {entry['size']}"
            )
        if _sha256(file) != entry["sha256"]:
            raise CheckpointCorrupt(f"{file}: sha256 does not match the manifest")
    state_path = path / "trainer_state.json"
    state = _read_json_object(state_path)
    for key in required_state:
        if key not in state:
            what = required_state[key] if isinstance(required_state, dict) else key
            raise CheckpointCorrupt(f"{state_path}: lacks {key!r}: the {what}")
    match = STEP_PATTERN.match(path.name)
    if match and "step" in state and state["step"] != int(match.group(1)):
        raise CheckpointCorrupt(
            f"{state_path}: step {state['step']!r}, but the directory is {path.name} "
            "(a file from another checkpoint?)"
        )
    return state


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


def find_resumable(
    output_dir: str | os.PathLike, required_state: Any = ()
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and each newer one skipped with why
    (the caller reports the skips).

    Example:

    >>> import tempfile
    >>> find_resumable(tempfile.mkdtemp())
    (None, [])
    """
    skipped = []
    for _step, path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path, required_state)
        except CheckpointCorrupt as error:
            skipped.append((path, str(error)))
            continue
        return path, skipped
    return None, skipped


def latest_checkpoint(output_dir: str | os.PathLike, required_state: Any = ()) -> Path | None:
    """The newest checkpoint that verifies; corrupt newer ones are named in the log."""
    latest, skipped = find_resumable(output_dir, required_state)
    for path, why in skipped:
        logger.warning("Skipping checkpoint %s: %s", path.name, why)
    return latest


def load_checkpoint(
    path: str | os.PathLike,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    required_state: Any = (),
) -> dict[str, Any]:
    """Verifies `path` (`verify_checkpoint`), restores every model and optimizer
    variable (a missing one is a `CheckpointCorrupt` naming it), returns the
    trainer state."""
    path = Path(path)
    state = verify_checkpoint(path, required_state)
    # The validating reader: a corrupt file is a CheckpointError naming it.
    model_arrays = read_safetensors(path / "model.safetensors")
    optimizer_arrays = read_safetensors(path / "optimizer.safetensors")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    model_file = path / "model.safetensors"
    _assign_arrays(model.variables, model_arrays, "model", model_file, _seed_owners(model))
    optimizer_file = path / "optimizer.safetensors"
    _assign_arrays(optimizer.variables, optimizer_arrays, "optimizer", optimizer_file)
    return state


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> None:
    """Deletes the oldest committed checkpoints so that `keep` remain, oldest
    first; each is renamed aside before it is deleted (see `remove_torn`)."""
    existing = list_checkpoints(output_dir)
    for _, path in existing[: max(len(existing) - keep, 0)]:
        _remove_aside(path)
