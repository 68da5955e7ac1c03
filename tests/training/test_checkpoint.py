"""Atomic, verifiable training checkpoints: complete or absent, never torn."""

import json

import keras
import numpy as np
import pytest

from chronos_moe.training import checkpoint


def _model_and_optimizer(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.AdamW(1e-2)
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(np.ones((4, 3)), np.zeros((4, 2)))
    return model, optimizer


def test_save_then_load_restores_model_optimizer_and_state(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    path = checkpoint.save_checkpoint(tmp_path, 7, model, optimizer, {"data": {"position": 7}})
    assert path.name == "step-7"
    assert sorted(p.name for p in path.iterdir()) == sorted([*checkpoint.FILES, "manifest.json"])
    other, other_optimizer = _model_and_optimizer(1)
    state = checkpoint.load_checkpoint(path, other, other_optimizer)
    assert state == {"data": {"position": 7}, "step": 7}
    for mine, theirs in zip(model.variables, other.variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )
    for mine, theirs in zip(optimizer.variables, other_optimizer.variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model, optimizer = _model_and_optimizer()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_torn_checkpoints_are_skipped_and_named(tmp_path, caplog):
    model, optimizer = _model_and_optimizer()
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, {})
    with open(tmp_path / "step-3" / "model.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))  # same size, other content
    (tmp_path / "step-2" / "manifest.json").unlink()
    torn = tmp_path / "step-4.tmp-abcd1234"
    torn.mkdir()
    with pytest.raises(checkpoint.CheckpointCorrupt, match="sha256 does not match"):
        checkpoint.verify_checkpoint(tmp_path / "step-3")
    with pytest.raises(checkpoint.CheckpointCorrupt, match="no manifest.json"):
        checkpoint.verify_checkpoint(tmp_path / "step-2")
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "step-1"
    assert "Skipping checkpoint step-3" in caplog.text
    assert checkpoint.remove_torn(tmp_path) == [torn]
    assert not torn.exists()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    model, optimizer = _model_and_optimizer()
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    bigger = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    bigger_optimizer = keras.optimizers.AdamW()
    with pytest.raises(checkpoint.CheckpointCorrupt, match="has shape"):
        checkpoint.load_checkpoint(path, bigger, bigger_optimizer)


def test_prune_keeps_the_newest(tmp_path):
    model, optimizer = _model_and_optimizer()
    for step in (2, 4, 6):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, {})
    checkpoint.prune_checkpoints(tmp_path, keep=2)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 6]
    manifest = json.loads((tmp_path / "step-6" / "manifest.json").read_text())
    assert set(manifest) == set(checkpoint.FILES)
