"""Build a Mixture-of-Experts Chronos model and train it with `model.fit` on an Arrow file.

A fresh Chronos T5 gets a router and expert heads (`build_moe_chronos`); a
`ChronosDataset` streams tokenized training windows from an Arrow file into
Keras' own `fit`, which logs the cross-entropy, the load-balancing loss and
each expert's share of the routing slots.

    python examples/train_moe_fit.py --quick   # a small model, seconds
    python examples/train_moe_fit.py           # Chronos-T5 (tiny) shape, minutes
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # or "jax"; before Keras is imported

from pathlib import Path

import keras
import numpy as np

from chronos_moe import ChronosPipeline, ChronosT5, build_moe_chronos
from chronos_moe.data import ChronosDataset, generate_sample_series, write_arrow

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a small model and few steps")
parser.add_argument("--output-dir", type=Path, default=Path("example-output/train-moe-fit"))
args = parser.parse_args()
args.output_dir.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)

# ## An Arrow file of training series
series = generate_sample_series(num_series=200, length=300, seed=0)
train_path = write_arrow([s[:-8] for s in series], args.output_dir / "train.arrow")
test_path = write_arrow(series, args.output_dir / "test.arrow")

# ## The model
#
# `chronos_config` sets the tokenizer and forecasting defaults the checkpoint
# carries. `build_moe_chronos` starts function-preserving: every expert is a copy
# of the dense output head, so the MoE model forecasts exactly as its base until
# training moves the weights.
chronos_config = {"n_tokens": 512, "context_length": 64, "prediction_length": 8}
size = {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 2} if args.quick else {}
base = ChronosT5.from_preset(
    "tiny", vocab_size=512, initializer_factor=0.05, chronos_config=chronos_config, **size
)
model = build_moe_chronos(
    base,
    num_experts=4,
    top_k=2,
    load_balancing_weight=0.01,
    router_z_loss_weight=0.001,
    expert_init_noise=0.01,  # break the symmetry between the identical experts
    seed=0,
)

# ## Data for `fit`
#
# A training `ChronosDataset` is an endless stream of random windows (the
# reference script's sampling); `steps_per_epoch` sets the epoch length. The
# validation dataset is one pass over the last window of every series.
train_data = ChronosDataset(
    str(train_path), model.chronos_config, batch_size=16, min_past=16, seed=0
)
validation_data = ChronosDataset(
    str(test_path), model.chronos_config, batch_size=64, min_past=16, mode="validation"
)

model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3, global_clipnorm=1.0))
history = model.fit(
    train_data,
    validation_data=validation_data,
    epochs=2 if args.quick else 10,
    steps_per_epoch=5 if args.quick else 50,
    verbose=2,
)
last = {key: round(float(values[-1]), 3) for key, values in history.history.items()}
print("last epoch:", last)  # loss, ce_loss, lb_loss, z_loss, expert_0..3 (+ val_ versions)

# ## Save, reload, forecast and route
#
# `save_pretrained` writes the Hugging Face layout plus the experts; the
# checkpoint loads back as a `ChronosMoE`.
pipeline = ChronosPipeline(model)
checkpoint = pipeline.save_pretrained(args.output_dir / "checkpoint")
reloaded = ChronosPipeline.from_pretrained(checkpoint)
contexts = [s[:-8] for s in series[:4]]
forecast = reloaded.predict(contexts, num_samples=10, seed=0)
routes = reloaded.route(contexts)
print("forecast:", forecast.shape)  # (4, 10, 8)
for i in range(len(contexts)):
    print(f"series {i}: experts {routes['expert_indices'][i]}, gates {routes['gates'][i].round(3)}")
print(
    "same routes after reloading:",
    bool(np.array_equal(routes["expert_indices"], pipeline.route(contexts)["expert_indices"])),
)
