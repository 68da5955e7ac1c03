"""`chronos_moe.training.callbacks`: a `model.fit` user gets the command line's
run (the same steps, windows, losses and weights), and the callbacks refuse what
would break exact resume."""

import json

import keras
import numpy as np
import pytest

import chronos_moe
from chronos_moe import backend
from chronos_moe.training import run
from chronos_moe.training.errors import RunError
from chronos_moe.training.logs import STEPS_LOG, read_steps
from tests.training.helpers import small_config


@pytest.fixture(scope="module")
def config(start_checkpoint, data_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarantees")
    return lambda name, **overrides: small_config(
        start_checkpoint, data_files[0], folder / name, use_moe=True, max_steps=4, **overrides
    )


def fit_like_the_runner(config, output_dir, **overrides):
    """The runner's model, optimizer and data, trained by a plain `fit`."""
    model = run.build_model(config)
    model.compile(optimizer=run.build_optimizer(config), jit_compile=backend.BACKEND == "jax")
    dataset = run.build_dataset(config)
    guarantees = chronos_moe.training.callbacks(
        output_dir,
        dataset,
        max_steps=config.max_steps,
        save_steps=config.save_steps,
        log_steps=config.log_steps,
        progress=False,
        **overrides,
    )
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=config.max_steps,
        shuffle=False,
        verbose=0,
        callbacks=guarantees,
    )
    return model


def test_fit_with_the_callbacks_is_the_command_line_run(config, tmp_path):
    reference = run.train(config("cli"), verbose=False)
    model = fit_like_the_runner(config("fit"), tmp_path)
    assert read_steps(tmp_path / STEPS_LOG) == read_steps(reference.output_dir / STEPS_LOG)
    for mine, theirs in zip(model.weights, reference.model.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-2", "step-4"]
    # Started again with resume=True on a finished run: nothing is left to train.
    with pytest.raises(RunError, match="has finished its 4 steps"):
        fit_like_the_runner(config("fit"), tmp_path, resume=True)


def test_a_directory_with_checkpoints_needs_resume(config, tmp_path):
    fit_like_the_runner(config("first"), tmp_path)
    with pytest.raises(RunError, match="holds checkpoints of another run"):
        fit_like_the_runner(config("first"), tmp_path)
