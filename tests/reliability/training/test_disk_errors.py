"""A full disk or a failing one while a checkpoint is saved (issue 9, item 15).

ENOSPC and EIO, injected while a file of the checkpoint is written and on the
rename that commits it: the run stops with a message naming the step and the
cause, the previous checkpoint is intact and verifies, no `step-N/` lacks a
manifest, leftovers are removed (at once, or at the next start when even that
failed), and `--resume` continues to the uninterrupted run's result.
"""

import errno
import os

import keras
import numpy as np
import pytest
import safetensors.numpy

from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.training import checkpoint
from chronos_moe.training.checkpoint import CheckpointSaveError, NonFiniteCheckpoint
from tests.reliability.training.runs import (
    assert_every_checkpoint_verifies,
    assert_same_run,
    committed,
    output_of,
    torn,
)


def test_enospc_and_eio_in_a_real_run(runs, reference):
    config = runs.config("disk")
    output = output_of(config)
    full = runs.run(config, fault="enospc:save.optimizer:4")
    assert full.returncode == 2
    assert "Saving checkpoint step-4 failed: No space left on device" in full.stderr
    assert "the newest checkpoint is step-2" in full.stderr
    assert "Traceback" not in full.stderr
    assert committed(output) == [2] and not torn(output)
    assert_every_checkpoint_verifies(output)

    failing = runs.run(config, resume=True, fault="eio:save.rename:6")
    assert failing.returncode == 2
    assert "Saving checkpoint step-6 failed: Input/output error" in failing.stderr
    assert committed(output) == [2, 4] and not torn(output)
    assert_every_checkpoint_verifies(output)

    resumed = runs.run(config, resume=True)
    assert resumed.returncode == 0 and "resuming at step 4" in resumed.stdout, resumed.stderr
    assert_same_run(output, reference[0])


@pytest.fixture(scope="module")
def model_and_optimizer():
    keras.utils.set_random_seed(0)
    model = ChronosT5.from_preset(
        "tiny", vocab_size=32, num_layers=1, d_model=8, d_ff=16, num_heads=2, d_kv=4
    )
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _half_then(code):
    """A `safetensors.numpy.save_file` that writes half the file, then fails."""
    real = safetensors.numpy.save_file

    def save_file(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError(code, os.strerror(code), filename)

    return save_file


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_failed_save_leaves_the_previous_checkpoint(
    model_and_optimizer, tmp_path, monkeypatch, code, where
):
    model, optimizer = model_and_optimizer
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {"data": {}})
    before = {p.name: p.read_bytes() for p in (tmp_path / "step-1").iterdir()}
    if where == "write":
        monkeypatch.setattr(safetensors.numpy, "save_file", _half_then(code))
    else:

        def rename(source, target):
            raise OSError(code, os.strerror(code), str(source))

        monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(CheckpointSaveError) as failure:
        checkpoint.save_checkpoint(tmp_path, 2, model, optimizer, {"data": {}})
    message = str(failure.value)
    assert message.startswith(f"Saving checkpoint step-2 failed: {os.strerror(code)} (")
    assert message.endswith("the newest checkpoint is step-1.")
    assert failure.value.errno == code
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]  # the temp dir is gone
    assert {p.name: p.read_bytes() for p in (tmp_path / "step-1").iterdir()} == before
    checkpoint.verify_checkpoint(tmp_path / "step-1")


def test_leftovers_of_a_failed_cleanup_are_removed_at_the_next_start(
    model_and_optimizer, tmp_path, monkeypatch
):
    model, optimizer = model_and_optimizer
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {"data": {}})
    monkeypatch.setattr(safetensors.numpy, "save_file", _half_then(errno.EIO))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(CheckpointSaveError, match="step-2 failed: Input/output error"):
        checkpoint.save_checkpoint(tmp_path, 2, model, optimizer, {"data": {}})
    monkeypatch.undo()
    (left,) = [p for p in tmp_path.iterdir() if p.name != "step-1"]
    assert left.name.startswith("step-2.tmp-")
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "step-1"
    assert checkpoint.remove_torn(tmp_path) == [left]  # what `--resume` does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]


def test_a_non_finite_variable_is_never_committed(model_and_optimizer, tmp_path):
    model, optimizer = model_and_optimizer
    variable = optimizer.variables[-1]
    saved = keras.ops.convert_to_numpy(variable)
    poisoned = np.array(saved, copy=True)
    poisoned.flat[0] = np.inf
    variable.assign(poisoned)
    try:
        with pytest.raises(
            NonFiniteCheckpoint, match=r"step-3: optimizer variable .* 1 non-finite"
        ):
            checkpoint.save_checkpoint(tmp_path, 3, model, optimizer, {"data": {}})
    finally:
        variable.assign(saved)
    assert list(tmp_path.iterdir()) == []
