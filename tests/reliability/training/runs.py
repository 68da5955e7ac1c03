"""Real `chronos-moe train` processes for the fault-injection tests (issue 9).

`Runs` writes the configs of a small MoE run (the one-layer start checkpoint
and generated series of `tests/training/helpers.py`, 16 steps, a checkpoint
every 2 steps, the newest 3 kept), starts `python -m chronos_moe train` under
this test session's Keras backend, optionally with a `CHRONOS_MOE_FAULT`
(`chronos_moe.training.faults`), and compares what runs left behind. JAX
processes share a persistent compilation cache, so only the first one compiles
the train step (about 12 s; later ones start in about 5 s, as torch ones do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from chronos_moe.checkpoints import read_safetensors
from chronos_moe.training import checkpoint, faults
from chronos_moe.training.run import CHECKPOINTS, STEPS_LOG, read_steps
from tests.training.helpers import make_data, make_start_checkpoint, small_config

ROOT = Path(__file__).resolve().parents[3]
BACKEND = keras.config.backend()
MAX_STEPS = 16
SAVE_STEPS = 2
RUN = {  # the reference run; every test's run has these settings unless it says otherwise
    "use_moe": True,
    "max_steps": MAX_STEPS,
    "save_steps": SAVE_STEPS,
    "save_total_limit": 3,
    "log_steps": 4,
}
TIMEOUT = 300  # seconds for one process: a hang fails the test instead of blocking CI


class Runs:
    """Configs, processes and results of the runs of one test session."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.start = make_start_checkpoint(folder / "start")
        self.data = make_data(folder)[0]
        self.cache = folder / "jax-cache"

    def config(self, name: str, **overrides) -> Path:
        """Writes `<name>/config.yaml` for a run into `<name>/out`; returns its path."""
        directory = self.folder / name
        directory.mkdir()
        config = small_config(self.start, self.data, directory / "out", **{**RUN, **overrides})
        path = directory / "config.yaml"
        path.write_text(config.to_yaml())
        return path

    def environment(self, fault: str | None, record: str = "faults") -> dict[str, str]:
        environment = {
            **os.environ,
            "KERAS_BACKEND": BACKEND,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "JAX_COMPILATION_CACHE_DIR": str(self.cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            faults.RECORD_ENV: str(self.folder / f"{record}.txt"),
        }
        environment.pop(faults.ENV, None)
        if fault:
            environment[faults.ENV] = fault
        return environment

    def start_process(
        self, config: Path, resume: bool = False, fault: str | None = None, record: str = "faults"
    ) -> subprocess.Popen:
        """Starts `chronos-moe train`; its faults are recorded in `<record>.txt`."""
        command = [sys.executable, "-m", "chronos_moe", "train", "--config", str(config)]
        return subprocess.Popen(
            command + (["--resume"] if resume else []),
            env=self.environment(fault, record),
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self, config: Path, resume: bool = False, fault: str | None = None
    ) -> subprocess.CompletedProcess:
        """Runs `chronos-moe train` to its end (or its death)."""
        process = self.start_process(config, resume, fault)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def recorded(self, record: str | None = None) -> list[tuple[str, str, str]]:
        """`(action, point, step)` of the faults fired so far: those recorded in
        `<record>.txt`, or (None) in every record of this session."""
        paths = [self.folder / f"{record}.txt"] if record else sorted(self.folder.glob("*.txt"))
        return [
            tuple(line.split())
            for path in paths
            if path.is_file()
            for line in path.read_text().splitlines()
        ]


def output_of(config: Path) -> Path:
    return config.parent / "out"


def wait_for(path: Path, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    """Polls until `path` exists; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"The run ended ({process.returncode}) before {path} appeared.")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s.")
        time.sleep(0.002)


def committed(output: Path) -> list[int]:
    """Steps of the committed `step-N/` checkpoints."""
    return [step for step, _ in checkpoint.list_checkpoints(output / CHECKPOINTS)]


def torn(output: Path) -> list[Path]:
    return sorted(
        p for p in (output / CHECKPOINTS).glob("step-*") if checkpoint.TEMP_MARKER in p.name
    )


def assert_every_checkpoint_verifies(output: Path) -> None:
    """No `step-N/` lacks a manifest or fails it, and none holds a non-finite value."""
    for _, path in checkpoint.list_checkpoints(output / CHECKPOINTS):
        checkpoint.verify_checkpoint(path)
        for name in ("model.safetensors", "optimizer.safetensors"):
            for key, value in read_safetensors(path / name).items():
                if np.issubdtype(value.dtype, np.floating):
                    assert np.isfinite(value).all(), f"{path / name}: {key} is not finite"


def arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The model and optimizer arrays of a checkpoint directory."""
    return {
        name: read_safetensors(path / name)
        for name in ("model.safetensors", "optimizer.safetensors")
    }


def assert_same_arrays(mine: Path, theirs: Path) -> None:
    """Bitwise-equal model and optimizer variables in two checkpoints."""
    a, b = arrays(mine), arrays(theirs)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name} {key}")


def assert_same_run(output: Path, reference: Path) -> None:
    """A run that was interrupted and resumed equals the uninterrupted one: every
    step's losses, learning rate and batch (window identities), the final weights
    and optimizer state (bitwise: CPU, deterministic kernels) and data position."""
    steps, expected = read_steps(output / STEPS_LOG), read_steps(reference / STEPS_LOG)
    assert [line["step"] for line in steps] == list(range(1, MAX_STEPS + 1))
    for line, want in zip(steps, expected, strict=True):
        assert line == want, f"step {line['step']}: {line} != {want}"
    last = f"step-{MAX_STEPS}"
    assert_same_arrays(output / CHECKPOINTS / last, reference / CHECKPOINTS / last)
    state, want = (
        json.loads((o / CHECKPOINTS / last / "trainer_state.json").read_text())
        for o in (output, reference)
    )
    assert state["data"] == want["data"]
    assert_same_arrays_final(output, reference)


def assert_same_arrays_final(output: Path, reference: Path) -> None:
    mine = read_safetensors(output / "final" / "model.safetensors")
    theirs = read_safetensors(reference / "final" / "model.safetensors")
    assert sorted(mine) == sorted(theirs)
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"final {key}")
