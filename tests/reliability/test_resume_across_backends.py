"""Resuming a training checkpoint on the other backend (issue 9, item 16, second half).

The checkpoint files are backend-neutral, but the random streams are not: JAX
and torch draw different dropout masks and router jitter from the same seed
state, and torch keeps a global generator JAX has no counterpart of. A resume
on the other backend could therefore not continue the run exactly, so it is
refused with a message naming both backends and the flag that resumes it —
never an optimizer (or anything else) silently restarted. Every run here is a
fresh `chronos-moe train` process; CI runs the suite under torch and under JAX,
so both directions are proven.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import yaml

from tests.training.helpers import make_data, make_start_checkpoint, small_config

ROOT = Path(__file__).resolve().parents[2]
HERE = keras.backend.backend()
OTHER = "jax" if HERE == "torch" else "torch"


def chronos_moe_train(config_file: Path, *flags: str, backend: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-m", "chronos_moe.cli", "train", "--config", str(config_file), *flags],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture(scope="module")
def written_here(tmp_path_factory):
    """A 2-step MoE run written by a fresh process under this backend."""
    folder = tmp_path_factory.mktemp("across")
    start = make_start_checkpoint(folder / "start")
    data, _ = make_data(folder)
    config = small_config(start, data, folder / "output", use_moe=True, max_steps=2, save_steps=2)
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.replace(max_steps=4).to_dict()))
    first = folder / "first.yaml"
    first.write_text(yaml.safe_dump(config.to_dict()))
    completed = chronos_moe_train(first, backend=HERE)
    assert completed.returncode == 0, completed.stderr
    return config_file, Path(config.output_dir)


@pytest.mark.parametrize("how", ["KERAS_BACKEND", "--backend"])
def test_resuming_on_the_other_backend_is_refused(written_here, how):
    config_file, output = written_here
    before = digests(output)
    flags = ["--resume"] + (["--backend", OTHER] if how == "--backend" else [])
    completed = chronos_moe_train(
        config_file, *flags, backend=OTHER if how == "KERAS_BACKEND" else HERE
    )
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    message = completed.stderr.strip().splitlines()[-1]
    assert f"written under the {HERE!r} backend; this run uses {OTHER!r}" in message
    assert f"Resume with `--backend {HERE}`" in message
    assert digests(output) == before  # nothing written, nothing restarted


def test_resuming_on_the_same_backend_continues_the_optimizer(written_here):
    config_file, output = written_here
    completed = chronos_moe_train(config_file, "--resume", backend=HERE)
    assert completed.returncode == 0, completed.stderr
    state = json.loads((output / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["optimizer_iterations"] == 4 and state["backend"]["backend"] == HERE
