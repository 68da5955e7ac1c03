"""Tune the number of experts and the routing of a MoE Chronos model with Optuna.

Generates demo series (the last `prediction_length` points of each held out),
then runs an Optuna study: each trial trains a MoE Chronos-T5 with sampled
values (number of experts, top_k, balance weight and mode, router z-loss
weight, router hidden size, learning rate) and is scored by WQL on the held-out
points. The study directory holds the resumable study, the best config as YAML
and the optimisation plots. Needs the tune extra: `pip install "chronos-moe[tune]"`.

    python examples/tune_experts.py --quick   # 2 trials of 4 steps of a one-layer model
    python examples/tune_experts.py           # 20 trials of 200 steps on Chronos-T5 tiny

The command-line equivalent is `chronos-moe tune --config base.yaml --trials N --output-dir DIR`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

from chronos_moe import TrainingConfig
from chronos_moe.training.compare import make_demo_data
from chronos_moe.tuning import SearchSpace, tune

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="2 trials of 4 steps, a tiny model")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/tune-experts"))
args = parser.parse_args()

# ## Data
#
# `train.arrow` holds every series but its last `prediction_length` points,
# `test.arrow` the whole series: each trial forecasts the held-out points.
prediction_length = 8
train_path, test_path = make_demo_data(
    args.output_dir / "data", prediction_length, num_series=24 if args.quick else 200
)

# ## The model to start from
#
# Chronos-T5 tiny from random weights; `--quick` starts from a one-layer,
# 16-wide version of it instead, saved as a checkpoint (a few milliseconds a step).
quick_start = None
if args.quick:
    from chronos_moe import ChronosT5, checkpoints

    small = ChronosT5.from_preset(
        "tiny",
        vocab_size=128,
        num_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        chronos_config={"n_tokens": 128},
    )
    quick_start = str(checkpoints.save_chronos(small, args.output_dir / "start"))

# ## The base run
#
# Every trial starts from this config; `max_steps` is each trial's budget and
# `validation_data_paths` the split it is scored on.
base = TrainingConfig(
    training_data_paths=[str(train_path)],
    probability=[1.0],
    validation_data_paths=[str(test_path)],
    model_id=quick_start or "google/t5-efficient-tiny",
    random_init=not args.quick,
    n_tokens=128 if args.quick else 1024,
    context_length=32 if args.quick else 128,
    prediction_length=prediction_length,
    min_past=16,
    per_device_train_batch_size=4 if args.quick else 32,
    max_steps=4 if args.quick else 200,
    save_steps=4 if args.quick else 200,
    log_steps=2 if args.quick else 20,
    num_samples=4 if args.quick else 20,
    use_moe=True,
    router_hidden_dim=8 if args.quick else 128,
    output_dir=str(args.output_dir / "best-run"),
)

# ## The search space
#
# The default space samples every routing setting; a space is a mapping of
# config keys to ranges (or a YAML file of one: `--search-space`).
# `num_active_experts` (top_k) is drawn up to the trial's `num_experts`.
if args.quick:
    space = SearchSpace.from_dict(
        {
            "num_experts": {"type": "int", "low": 2, "high": 4},
            "num_active_experts": {"type": "int", "low": 1, "high": 2},
            "load_balancing_weight": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        }
    )
else:
    space = SearchSpace.default(base)
print("search space:", sorted(space.dimensions))

# ## The study
#
# Running the script (or `chronos-moe tune`) again on the same directory
# resumes the study from `study.db`.
result = tune(base, args.output_dir / "study", trials=2 if args.quick else 20, space=space)
best = result.study.best_trial
print(f"best trial {best.number}: WQL {best.value:.4f}, seed {best.user_attrs['seed']}")
print("best values:", {key: best.params[key] for key in sorted(best.params)})
print("best config:", result.best_config_path)
print("plots:", ", ".join(path.name for path in result.plots))
