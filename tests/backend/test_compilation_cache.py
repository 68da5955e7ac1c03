"""JAX's persistent compilation cache: a second process loads what the first
compiled (`chronos_moe.backend.jax.use_persistent_compilation_cache`).

Each case runs a small forecast in fresh processes and counts JAX's own cache
events (`jax.monitoring`); programs are kept whatever their compile time
(`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0`: the tiny model compiles in
well under JAX's one-second threshold)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "jax", reason="JAX's compilation cache (the torch suite runs eagerly)"
)

ROOT = Path(__file__).resolve().parents[2]
FORECAST = """
import json
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
import keras, numpy as np
from chronos_moe import ChronosPipeline, ChronosT5
keras.utils.set_random_seed(0)
config = {"n_tokens": 64, "context_length": 16, "prediction_length": 4}
model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, chronos_config=config)
ChronosPipeline(model).predict(np.arange(10.0)[None], num_samples=2)
print(json.dumps({
    "dir": jax.config.jax_compilation_cache_dir,
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
}))
"""


def forecast(home: Path, **variables: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JAX_COMPILATION_CACHE", "CHRONOS_MOE_JAX", "XDG_CACHE"))
    }
    env.update(
        HOME=str(home),
        KERAS_BACKEND="jax",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(ROOT),
        **variables,
    )
    completed = subprocess.run(
        [sys.executable, "-c", FORECAST], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_programs(tmp_path):
    first = forecast(tmp_path)
    directory = tmp_path / ".cache" / "chronos-moe" / "jax"  # the default, under HOME
    assert first["dir"] == str(directory)
    assert first["misses"] > 0 and first["hits"] == 0
    assert any(directory.iterdir())
    second = forecast(tmp_path)
    assert second["hits"] == first["misses"] and second["misses"] == 0


def test_the_cache_directory_can_be_chosen_or_turned_off(tmp_path):
    chosen = tmp_path / "chosen"
    assert forecast(tmp_path, CHRONOS_MOE_JAX_CACHE_DIR=str(chosen))["dir"] == str(chosen)
    assert any(chosen.iterdir())
    off = forecast(tmp_path / "home", CHRONOS_MOE_JAX_CACHE_DIR="off")
    assert off["dir"] is None and off["hits"] == off["misses"] == 0
    assert not (tmp_path / "home" / ".cache" / "chronos-moe").exists()


def test_a_directory_set_for_jax_itself_is_kept(tmp_path):
    own = tmp_path / "own"
    result = forecast(tmp_path, JAX_COMPILATION_CACHE_DIR=str(own), CHRONOS_MOE_JAX_CACHE_DIR="off")
    assert result["dir"] == str(own) and any(own.iterdir())
