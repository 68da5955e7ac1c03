"""Forecast with a Chronos checkpoint.

Loads a Chronos checkpoint (a released one such as `amazon/chronos-t5-tiny`, or a
local directory), forecasts a few series and saves a fan chart.

    python examples/forecast.py --model amazon/chronos-t5-tiny   # downloads 33 MB
    python examples/forecast.py --quick                           # a tiny random checkpoint

Without `--model` the example builds a tiny, untrained checkpoint first, so it
runs offline; its forecasts are noise around the series' scale.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import numpy as np

import chronos_moe
from chronos_moe import ChronosPipeline, ChronosT5
from chronos_moe.evaluation import plot_forecast


def tiny_checkpoint(directory: Path) -> Path:
    """A randomly initialised Chronos checkpoint, small enough to build in a second."""
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=512,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        chronos_config={"n_tokens": 512, "context_length": 64, "prediction_length": 12},
    )
    return ChronosPipeline(model).save_pretrained(directory)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="checkpoint directory or hub id (default: a tiny random one)")
parser.add_argument("--quick", action="store_true", help="tiny random checkpoint, few samples")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/forecast"))
args = parser.parse_args()
args.output_dir.mkdir(parents=True, exist_ok=True)

# ## Load a checkpoint
#
# `from_pretrained` takes a hub id or a directory with `config.json` and
# `model.safetensors`, the layout of the released Chronos models.
model_path = args.model or tiny_checkpoint(args.output_dir / "tiny-checkpoint")
pipeline = ChronosPipeline.from_pretrained(model_path)
print("backend:", chronos_moe.backend_info())

# ## Forecast
#
# Inputs are one series, a list of series of any lengths (left-padded with NaN),
# or a 2-D array; NaN marks a missing value.
t = np.arange(300, dtype="float32")
series = [
    10 + np.sin(2 * np.pi * t / 24),  # a daily cycle of hourly data
    np.where(t % 50 < 3, np.nan, 100 + 0.5 * t),  # a trend with gaps
    np.cos(t[:120] / 7.0) * 1000,  # a shorter one
]
num_samples = 5 if args.quick else 20
samples = pipeline.predict(series, prediction_length=12, num_samples=num_samples, seed=0)
print("sample paths:", samples.shape)  # (3, num_samples, 12)

quantiles, mean = pipeline.predict_quantiles(
    series, prediction_length=12, quantile_levels=[0.1, 0.5, 0.9], num_samples=num_samples, seed=0
)
print("quantiles:", quantiles.shape, "mean:", mean.shape)  # (3, 12, 3) (3, 12)

# ## Plot
plot_forecast(
    series[0],
    quantiles[0],
    quantile_levels=[0.1, 0.5, 0.9],
    path=args.output_dir / "forecast.png",
    title="series 0",
)
print("wrote", args.output_dir / "forecast.png")
