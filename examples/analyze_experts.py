"""Analyse what the experts of a Mixture-of-Experts Chronos model specialise in.

Routes every series of two datasets (generated demo series and KernelSynth
Gaussian-process series) through a MoE model's router and writes a report:
each expert's share of the routing slots, its gates, the features (scale,
trend, seasonality, noise) of the series it attracts, and example series.

    python examples/analyze_experts.py --model path/to/moe-checkpoint
    python examples/analyze_experts.py --quick   # trains a small MoE model first, seconds

The command-line equivalent is
`chronos-moe analyze-experts --model DIR --data a.arrow b.arrow --output-dir report/`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import keras

from chronos_moe import ChronosPipeline, ChronosT5, build_moe_chronos
from chronos_moe.data import ChronosDataset, generate_sample_series, kernel_synth
from chronos_moe.evaluation import analyze_routing, write_routing_report

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="a ChronosMoE checkpoint (default: train a small one)")
parser.add_argument("--quick", action="store_true", help="a small model and few steps")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/analyze-experts"))
args = parser.parse_args()

datasets = {
    "demo": generate_sample_series(num_series=60, length=200, seed=0),
    "kernel_synth": kernel_synth(num_series=60, length=200, seed=0),
}

# ## A MoE model
#
# Without `--model`, train a small one for a few steps on both datasets so that
# the router has something to tell apart.
if args.model:
    pipeline = ChronosPipeline.from_pretrained(args.model)
else:
    keras.utils.set_random_seed(0)
    base = ChronosT5.from_preset(
        "tiny",
        vocab_size=512,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        initializer_factor=0.05,
        chronos_config={"n_tokens": 512, "context_length": 64, "prediction_length": 8},
    )
    model = build_moe_chronos(
        base, num_experts=4, top_k=2, router_z_loss_weight=0.01, expert_init_noise=0.01, seed=0
    )
    train_data = ChronosDataset(
        list(datasets.values()), model.chronos_config, batch_size=16, min_past=16, seed=0
    )
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3))
    steps = 10 if args.quick else 300
    model.fit(train_data, epochs=1, steps_per_epoch=steps, verbose=0)
    pipeline = ChronosPipeline(model)

# ## Route every series and summarise
analysis = analyze_routing(pipeline, datasets)
print(f"{analysis.num_experts} experts, top-{analysis.top_k}")
print("slot share per expert:", analysis.utilization.round(3))
print("mean routing entropy (nats):", round(analysis.mean_entropy, 3))
for name, counts in zip(analysis.dataset_names, analysis.dataset_counts, strict=True):
    print(f"{name:>12}: series per expert {counts.tolist()}")
for feature, per_expert in analysis.expert_features.items():
    print(f"{feature:>20}: {per_expert.round(3)}")

# `report.md` with utilization.png, gates.png, examples.png and routing.csv.
report = write_routing_report(analysis, args.output_dir)
print("wrote", report)
