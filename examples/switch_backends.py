"""Switch between the torch and JAX backends.

Keras reads `KERAS_BACKEND` once, when it is first imported, so a program picks
its backend before importing Keras (or anything that imports it). This example
saves a checkpoint, then forecasts with it in one fresh process per backend and
checks that both give the same greedy forecast.

    python examples/switch_backends.py --quick
    KERAS_BACKEND=jax python examples/switch_backends.py --quick   # save from JAX instead
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

import subprocess
import sys
from pathlib import Path

import numpy as np

import chronos_moe
from chronos_moe.data import generate_sample_series

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a tiny model")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/switch-backends"))
parser.add_argument("--forecast", type=Path, help=argparse.SUPPRESS)  # the child process' job
args = parser.parse_args()

if args.forecast:  # a child: forecast with the saved checkpoint on this process' backend
    pipeline = chronos_moe.ChronosPipeline.from_pretrained(args.forecast / "checkpoint")
    context = np.load(args.forecast / "context.npy")
    forecast = pipeline.predict(context, num_samples=1, top_k=1)  # greedy: no randomness
    backend = chronos_moe.backend_info()["backend"]
    np.save(args.forecast / f"forecast-{backend}.npy", forecast)
    sys.exit(0)

# ## The backend of this process
#
# `chronos_moe.backend_info()` reports what Keras uses.
print("this process:", chronos_moe.backend_info())

# ## Save a checkpoint here
#
# Checkpoints are safetensors in the Hugging Face layout: backend-independent.
model = chronos_moe.ChronosT5.from_preset(
    "tiny",
    vocab_size=512,
    **({"d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 2} if args.quick else {}),
    chronos_config={"n_tokens": 512, "context_length": 64, "prediction_length": 12},
)
args.output_dir.mkdir(parents=True, exist_ok=True)
chronos_moe.ChronosPipeline(model).save_pretrained(args.output_dir / "checkpoint")
context = np.stack(generate_sample_series(3, 100, seed=0))
np.save(args.output_dir / "context.npy", context)

# ## Forecast in a fresh process per backend
#
# The environment variable is set before the child imports Keras.
forecasts = {}
for backend in ("torch", "jax"):
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, __file__, "--forecast", str(args.output_dir)]
    subprocess.run(command, env=env, check=True)
    forecasts[backend] = np.load(args.output_dir / f"forecast-{backend}.npy")
    print(f"{backend}: greedy forecast of series 0 = {forecasts[backend][0, 0, :4].round(2)} …")

difference = np.abs(forecasts["torch"] - forecasts["jax"]).max() / np.abs(forecasts["torch"]).max()
print(f"largest difference between the backends: {difference:.2e} (relative)")
