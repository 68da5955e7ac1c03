"""`model.fit` on a ChronosDataset read from an Arrow file: dense and MoE, on the active backend."""

import keras
import numpy as np
import pytest

import chronos_moe
from chronos_moe.data import ChronosDataset, generate_sample_series

CHRONOS_CONFIG = {"context_length": 32, "prediction_length": 8, "n_tokens": 128}


def _model():
    keras.utils.set_random_seed(0)
    return chronos_moe.ChronosT5.from_preset(
        "tiny",
        vocab_size=128,
        num_layers=1,
        d_model=64,
        d_ff=128,
        num_heads=2,
        d_kv=32,
        chronos_config=CHRONOS_CONFIG,
    )


@pytest.fixture
def data_path(arrow_file):
    return arrow_file(generate_sample_series(16, 120, seed=0), name="train.arrow")


def _datasets(path):
    config = chronos_moe.ChronosConfig(**CHRONOS_CONFIG)
    train = ChronosDataset(path, config, batch_size=4, min_past=16, seed=0)
    validation = ChronosDataset(path, config, batch_size=4, min_past=16, mode="validation")
    return train, validation


def test_fit_chronos_t5_from_an_arrow_file(data_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    train, _ = _datasets(data_path)
    history = model.fit(train, steps_per_epoch=2, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    # Keras read batch 0 twice (to build, then to train): 4 steps took batches 0..3.
    assert train.get_state()["position"] == 4


def test_fit_chronos_moe_from_an_arrow_file(data_path):
    model = chronos_moe.build_moe_chronos(_model(), 4, 2)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    train, validation = _datasets(data_path)
    history = model.fit(train, steps_per_epoch=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["ce_loss"]).all()
    assert np.isfinite(history.history["lb_loss"]).all()
    results = model.evaluate(validation, verbose=0, return_dict=True)
    assert np.isfinite(results["ce_loss"])
