"""Compare a dense and a Mixture-of-Experts Chronos model trained on the same data.

Trains both bundled sample configs (dense, and 4 experts with top-2 routing) on
generated demo data with the same seed and number of steps, then writes a
report: training curves, validation cross-entropy, seconds per step and the
experts' shares of the validation series.

    python examples/compare.py --quick   # 10 steps each, short context, 48 series: a minute
    python examples/compare.py           # what `chronos-moe compare --quick` runs

The command-line equivalent is `chronos-moe compare [--quick] --output-dir DIR`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

from chronos_moe.training.compare import (
    QUICK_OVERRIDES,
    SAMPLE_CONFIGS,
    compare,
    make_demo_data,
    sample_config,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="10 steps each, short context")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/compare"))
args = parser.parse_args()

# ## The two configs
#
# The sample configs (`chronos_moe/configs/*.yaml`) differ only in the MoE keys.
# Both train on generated demo data: 200 series, the last `prediction_length`
# points of each held out for validation (what `chronos-moe compare` does
# without configs).
dense, moe = (sample_config(name) for name in SAMPLE_CONFIGS)
overrides = dict(QUICK_OVERRIDES)  # what `chronos-moe compare --quick` trains
if args.quick:
    overrides.update(
        n_tokens=512, context_length=64, prediction_length=8, min_past=16,
        max_steps=10, save_steps=10, log_steps=5, per_device_train_batch_size=8,
    )  # fmt: skip
num_series = 48 if args.quick else 200  # --quick: fewer series to score
train_path, test_path = make_demo_data(
    args.output_dir / "data", overrides["prediction_length"], num_series=num_series
)
overrides.update(
    training_data_paths=[str(train_path)],
    probability=[1.0],
    validation_data_paths=[str(test_path)],
)
dense, moe = dense.replace(**overrides), moe.replace(**overrides)
print({key: getattr(moe, key) for key in ("use_moe", "num_experts", "num_active_experts")})

# ## Train both and write the report
# --quick: 5 forecast samples per series instead of 20 (a coarser, faster score).
report = compare(args.output_dir, dense, moe, overwrite=True, num_samples=5 if args.quick else None)
print(report.read_text())
