"""Fine-tune a pretrained Chronos checkpoint with Mixture-of-Experts heads.

Attaches a router and expert heads to a pretrained Chronos model, checks that
the MoE model starts with exactly the pretrained model's forecasts, then
fine-tunes only the router and the experts (`freeze_base: true`) with
`chronos_moe.train`.

    python examples/finetune_moe.py --model amazon/chronos-t5-tiny   # downloads 33 MB
    python examples/finetune_moe.py --quick                           # a tiny stand-in checkpoint

Without `--model` a tiny random checkpoint stands in for the pretrained one.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import numpy as np

import chronos_moe
from chronos_moe import ChronosPipeline, ChronosT5, TrainingConfig, build_moe_chronos
from chronos_moe.data import generate_sample_series, write_arrow

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="pretrained checkpoint directory or hub id")
parser.add_argument("--quick", action="store_true", help="a tiny stand-in model, 10 steps")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/finetune-moe"))
args = parser.parse_args()
args.output_dir.mkdir(parents=True, exist_ok=True)

if args.model is None:  # a stand-in for amazon/chronos-t5-tiny
    stand_in = ChronosT5.from_preset(
        "tiny",
        vocab_size=4096,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        chronos_config={"context_length": 64, "prediction_length": 8},
    )
    args.model = str(ChronosPipeline(stand_in).save_pretrained(args.output_dir / "pretrained"))

# ## A function-preserving start
#
# Every expert head starts as a copy of the pretrained output head, so the MoE
# model's logits — and its greedy forecasts — are the pretrained model's.
pretrained = ChronosPipeline.from_pretrained(args.model)
moe = ChronosPipeline(build_moe_chronos(pretrained.model, num_experts=4, top_k=2))
context = generate_sample_series(4, 200, seed=1)
greedy = {"prediction_length": 4, "num_samples": 1, "top_k": 1}
same = np.array_equal(pretrained.predict(context, **greedy), moe.predict(context, **greedy))
print("MoE forecasts equal the pretrained model's before training:", same)

# ## Fine-tune on your data
#
# `random_init: false` loads `model_id` (a directory or hub id); `use_moe: true`
# attaches the experts; `freeze_base: true` trains only the router and experts.
# `n_tokens` must be the checkpoint's vocabulary size.
base = pretrained.config
series = generate_sample_series(num_series=100, length=400, seed=0)
data_path = write_arrow(series, args.output_dir / "train.arrow")
config = TrainingConfig(
    training_data_paths=[str(data_path)],
    probability=[1.0],
    model_id=args.model,
    random_init=False,
    n_tokens=base.n_tokens,
    context_length=base.context_length,
    prediction_length=base.prediction_length,
    min_past=32,
    use_moe=True,
    num_experts=4,
    num_active_experts=2,
    freeze_base=True,
    load_balancing_weight=0.01,
    learning_rate=1e-4,
    per_device_train_batch_size=8 if args.quick else 32,
    max_steps=10 if args.quick else 500,
    save_steps=10 if args.quick else 250,
    log_steps=5 if args.quick else 50,
    output_dir=str(args.output_dir / "run"),
)
result = chronos_moe.train(config, overwrite=True, verbose=not args.quick)
for row in result.log:
    print(f"step {row['step']:>4.0f}  ce_loss {row['ce_loss']:.3f}  lb_loss {row['lb_loss']:.3f}")

# The fine-tuned checkpoint loads as a ChronosMoE.
finetuned = ChronosPipeline.from_pretrained(result.final_dir)
print("loaded:", type(finetuned.model).__name__)
print("routes:", finetuned.route(context)["expert_indices"].tolist())
