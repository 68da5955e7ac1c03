"""Train a dense Chronos model from scratch on generated data.

Writes demo series to an Arrow file, trains a Chronos-T5 (tiny) with
`chronos_moe.train` from a `TrainingConfig` (the same YAML keys as the reference
training script, see the configuration reference) and forecasts with the result.

    python examples/train_dense.py --quick     # 10 steps, seconds
    python examples/train_dense.py             # 300 steps, a few minutes on a laptop CPU

The command-line equivalent is `chronos-moe train --config config.yaml`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import numpy as np

import chronos_moe
from chronos_moe import ChronosPipeline, TrainingConfig
from chronos_moe.data import generate_sample_series, write_arrow

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="10 training steps")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/train-dense"))
args = parser.parse_args()

# ## Data
#
# One row per series in the GluonTS/Chronos Arrow layout (`start`, `target`).
# `generate_sample_series` draws level + trend + seasonality + noise series.
series = generate_sample_series(num_series=100, length=300, seed=0)
(args.output_dir / "data").mkdir(parents=True, exist_ok=True)
data_path = write_arrow(series, args.output_dir / "data" / "train.arrow")

# ## Configuration
#
# A `TrainingConfig` holds every key of the YAML file; unset keys keep the
# reference script's defaults. `model_id` names the T5 size preset and
# `random_init: true` starts from random weights.
config = TrainingConfig(
    training_data_paths=[str(data_path)],
    probability=[1.0],
    model_id="google/t5-efficient-tiny",
    random_init=True,
    n_tokens=512,  # 4096 for the released models; fewer bins train faster
    context_length=64,
    prediction_length=8,
    min_past=16,
    per_device_train_batch_size=8 if args.quick else 32,
    max_steps=10 if args.quick else 300,
    save_steps=10 if args.quick else 100,
    log_steps=5 if args.quick else 25,
    learning_rate=1e-3,
    output_dir=str(args.output_dir / "run"),
)
print(config.to_yaml())  # what `chronos-moe train --config` would read

# ## Train
#
# `train` writes `log.csv`, resumable checkpoints under `checkpoints/step-N/`
# and the final model under `final/` (Hugging Face layout + `model.keras`).
result = chronos_moe.train(config, overwrite=True, verbose=not args.quick)
for row in result.log:
    print(f"step {row['step']:>4.0f}  ce_loss {row['ce_loss']:.3f}")

# ## Forecast with the trained model
pipeline = ChronosPipeline.from_pretrained(result.final_dir)
forecast = pipeline.predict(series[0][:-8], num_samples=10, seed=0)
median = np.median(forecast[0], axis=0)
print("median forecast:", np.round(median, 1))
print("actual values:  ", np.round(series[0][-8:], 1))
