"""Evaluate a Chronos model on your own data.

Turns a long-format table (one row per series id and timestamp, as in a CSV
export) into an Arrow file, forecasts the last `prediction_length` points of
every series and scores them with the Chronos benchmark's metrics (WQL, MASE)
next to the Naive and Seasonal Naive baselines.

    python examples/evaluate.py --model amazon/chronos-t5-tiny   # downloads 33 MB
    python examples/evaluate.py --quick                           # a tiny random checkpoint

The command-line equivalent is
`chronos-moe evaluate --model DIR --data my_data.arrow --prediction-length 12`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import numpy as np
import pandas as pd

from chronos_moe import ChronosPipeline, ChronosT5
from chronos_moe.data import generate_sample_series, series_from_dataframe, write_arrow
from chronos_moe.evaluation import evaluate, plot_forecast

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="checkpoint directory or hub id (default: a tiny random one)")
parser.add_argument("--quick", action="store_true", help="tiny random checkpoint, few samples")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/evaluate"))
args = parser.parse_args()
args.output_dir.mkdir(parents=True, exist_ok=True)

# ## Your data
#
# Here a long-format DataFrame stands in for your CSV file
# (`pd.read_csv("my_data.csv", parse_dates=["timestamp"])`).
values = generate_sample_series(num_series=20, length=200, seed=3)
frame = pd.DataFrame(
    {
        "id": np.repeat([f"store_{i}" for i in range(len(values))], 200),
        "timestamp": np.tile(pd.date_range("2024-01-01", periods=200, freq="h"), len(values)),
        "target": np.concatenate(values),
    }
)
series = series_from_dataframe(frame, id_column="id", timestamp_column="timestamp")
# The Arrow file records the frequency, from which the evaluation takes the
# seasonality of MASE and Seasonal Naive (hourly: 24).
data_path = write_arrow(series, args.output_dir / "my_data.arrow", start="2024-01-01", freq="h")

# ## The model
if args.model is None:
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=512,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        chronos_config={"n_tokens": 512, "context_length": 64, "prediction_length": 12},
    )
    args.model = ChronosPipeline(model).save_pretrained(args.output_dir / "tiny-checkpoint")
pipeline = ChronosPipeline.from_pretrained(args.model)

# ## Evaluate
#
# Each series' last 12 points are the target; the model forecasts them from the
# points before. Relative scores below 1 beat Seasonal Naive.
result = evaluate(
    pipeline, str(data_path), prediction_length=12, num_samples=5 if args.quick else 20
)
print(result.table())
print(f"relative WQL {result.relative_wql:.3f}, relative MASE {result.relative_mase:.3f}")
result.to_csv(args.output_dir / "scores.csv")

# A fan chart of the first series against what actually happened.
quantiles, _ = pipeline.predict_quantiles(series[0][:-12], prediction_length=12, seed=0)
plot_forecast(
    series[0][:-12], quantiles[0], target=series[0][-12:], path=args.output_dir / "forecast.png"
)
print("wrote", args.output_dir / "scores.csv", "and", args.output_dir / "forecast.png")
