"""Hugging Face-layout checkpoints across backends (issue 9, item 16, first half).

A dense `ChronosT5` and a `ChronosMoE` (experts that differ) are saved here with
`save_chronos` and loaded in a fresh Python under the *other* backend: the
weights are bitwise equal, the logits within 1e-5, and greedy forecasts
identical. CI runs the suite under torch and under JAX, so both directions
(torch → JAX and JAX → torch) are proven.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import ChronosPipeline, backend, build_moe_chronos
from chronos_moe.checkpoints import hf_weight_map, save_chronos
from tests.moe.helpers import make_batch, tiny_base

ROOT = Path(__file__).resolve().parents[2]
OTHER = "jax" if keras.config.backend() == "torch" else "torch"

LOAD_ELSEWHERE = """
import json, sys
import keras, numpy as np
from chronos_moe import ChronosPipeline
from chronos_moe.checkpoints import hf_weight_map, load_chronos
from tests.reliability.test_across_backends import logits_of

folder = sys.argv[1]
inputs = np.load(f"{folder}/inputs.npz", allow_pickle=False)
batch = {key: inputs[key] for key in ("input_ids", "attention_mask", "labels")}
for name in json.loads(sys.argv[2]):
    model = load_chronos(f"{folder}/{name}")
    weights = {key: keras.ops.convert_to_numpy(v) for key, (v, _) in hf_weight_map(model).items()}
    outputs = {"logits": logits_of(model, batch)}
    if name == "moe":  # the whole stack: encoder, cached decoder, router, experts
        pipeline = ChronosPipeline(model)
        outputs["forecast"] = pipeline.predict(inputs["series"], num_samples=2, top_k=1, seed=0)
    np.savez(f"{folder}/{name}-weights.npz", **weights)
    np.savez(f"{folder}/{name}-outputs.npz", backend=np.array(keras.config.backend()), **outputs)
"""


def logits_of(model, batch):
    """The logits of `model` on `batch`, compiled on JAX (eager JAX runs op by op)."""

    def forward(inputs):
        out = model(inputs)
        return out["logits"] if isinstance(out, dict) else out

    tensors = {key: ops.convert_to_tensor(value) for key, value in batch.items()}
    return ops.convert_to_numpy(backend.compile_stateless(model, forward)(tensors))


@pytest.fixture(scope="module")
def models():
    small = dict(d_model=32, d_kv=8, d_ff=64, num_heads=4)  # cheap to compile on JAX
    base = tiny_base(tie_word_embeddings=False, **small)
    moe = build_moe_chronos(
        tiny_base(**small), num_experts=4, top_k=2, expert_init_noise=0.2, seed=1
    )
    rng = np.random.default_rng(1)
    moe.experts.down.assign(rng.normal(0, 0.05, moe.experts.down.shape).astype("float32"))
    return {"dense": base, "moe": moe}


@pytest.fixture(scope="module")
def loaded_elsewhere(models, tmp_path_factory):
    """Saves each model here, loads it under the other backend in a fresh process."""
    folder = tmp_path_factory.mktemp("across")
    rng = np.random.default_rng(2)
    series = np.sin(np.arange(40) / 3.0)[None] * rng.uniform(1, 5, (3, 1)) + rng.normal(
        size=(3, 40)
    )
    np.savez(folder / "inputs.npz", series=series, **make_batch())
    for name, model in models.items():
        save_chronos(model, folder / name)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_ELSEWHERE, str(folder), json.dumps(list(models))],
        env={**os.environ, "KERAS_BACKEND": OTHER, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_weights_are_bitwise_equal_on_the_other_backend(models, loaded_elsewhere, name):
    loaded = np.load(loaded_elsewhere / f"{name}-weights.npz", allow_pickle=False)
    here = {k: ops.convert_to_numpy(v) for k, (v, _) in hf_weight_map(models[name]).items()}
    assert set(loaded.files) == set(here)
    for key, value in here.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def other_outputs(folder, name):
    outputs = np.load(folder / f"{name}-outputs.npz", allow_pickle=False)
    assert str(outputs["backend"]) == OTHER
    return outputs, np.load(folder / "inputs.npz", allow_pickle=False)


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_logits_match_on_the_other_backend(models, loaded_elsewhere, name):
    outputs, inputs = other_outputs(loaded_elsewhere, name)
    batch = {key: inputs[key] for key in ("input_ids", "attention_mask", "labels")}
    np.testing.assert_allclose(outputs["logits"], logits_of(models[name], batch), rtol=0, atol=1e-5)


def test_greedy_forecasts_are_identical_on_the_other_backend(models, loaded_elsewhere):
    """One compiled forecast per backend (the MoE: every layer the dense model has too)."""
    outputs, inputs = other_outputs(loaded_elsewhere, "moe")
    pipeline = ChronosPipeline(models["moe"])
    forecast = pipeline.predict(inputs["series"], num_samples=2, top_k=1, seed=0)
    assert forecast.shape == (3, 2, 4)
    np.testing.assert_array_equal(outputs["forecast"], forecast)
