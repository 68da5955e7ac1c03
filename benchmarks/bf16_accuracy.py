"""Accuracy of bfloat16 forecasting against float32, on the latency benchmark's model.

`ChronosPipeline(model, compute_dtype="bfloat16")` samples with a bfloat16
copy of the model. This script measures what that changes, on a random
chronos-t5-tiny-shaped checkpoint (untied head, initializer factor 0.2, so that
its logits are spread; random weights: no released checkpoint is downloaded)
and the latency benchmark's synthetic series (32 series × 512 context → 64
steps):

* greedy decoding (`top_k=1`): the share of forecast tokens that are the same
  in bfloat16 and float32, and the share of series whose whole 64-step path is;
* sampling (20 samples, `top_k=50`, the same seed): the mean absolute
  difference of the 0.1/0.5/0.9 quantiles and of the mean forecast, relative
  to each series' mean absolute value (the tokenizer's scale), against the
  same quantity between two float32 runs with different seeds (sampling
  noise);
* the decoder's logits on one teacher-forced pass: max |Δ| and the share of
  positions whose arg-max agrees.

Usage (from the repository root):

    KERAS_BACKEND=torch python benchmarks/bf16_accuracy.py

Prints a Markdown table and writes `benchmarks/results/bf16_accuracy_<backend>.json`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--initializer-factor",
        type=float,
        default=0.2,
        help="scale of the random weights (0.2: logits spread like a trained model's, "
        "std about 2-4; the latency checkpoint's 0.05 gives nearly flat logits)",
    )
    args = parser.parse_args()
    import numpy as np
    import torch
    import transformers
    from predict_latency import CHRONOS_CONFIG, T5_TINY, make_context

    from chronos_moe.pipeline import ChronosPipeline

    backend = os.environ.get("KERAS_BACKEND", "torch")
    context = make_context(32, 512)
    with tempfile.TemporaryDirectory() as tmp:
        # The latency benchmark's shape, but an untied head and a larger
        # initializer factor: its random logits are spread, where the latency
        # checkpoint's (factor 0.05) are nearly flat and say nothing about rounding.
        torch.manual_seed(0)
        config = transformers.T5Config(
            **{
                **T5_TINY,
                "tie_word_embeddings": False,
                "initializer_factor": args.initializer_factor,
            }
        )
        config.chronos_config = dict(CHRONOS_CONFIG)
        checkpoint = Path(tmp)
        transformers.T5ForConditionalGeneration(config).eval().save_pretrained(checkpoint)
        fp32 = ChronosPipeline.from_pretrained(checkpoint)
        bf16 = ChronosPipeline.from_pretrained(checkpoint, compute_dtype="bfloat16")

    scale = np.abs(context).mean(axis=1)[:, None]
    greedy32 = fp32.predict(context, num_samples=1, top_k=1, seed=0)[:, 0]
    greedy16 = bf16.predict(context, num_samples=1, top_k=1, seed=0)[:, 0]
    same = np.isclose(greedy32, greedy16, rtol=0, atol=1e-6 * scale)

    def summary(samples):
        q = np.quantile(samples, [0.1, 0.5, 0.9], axis=1)  # (3, series, steps)
        return q, samples.mean(axis=1)

    q32, m32 = summary(fp32.predict(context, num_samples=20, top_k=50, seed=1))
    q16, m16 = summary(bf16.predict(context, num_samples=20, top_k=50, seed=1))
    q32b, m32b = summary(fp32.predict(context, num_samples=20, top_k=50, seed=2))

    def relative(a, b):
        return float(np.mean(np.abs(a - b) / scale))

    # Teacher-forced logits of the model in each dtype.
    from keras import ops

    ids, mask, _, _ = fp32._tokenize(context, 32)
    labels = fp32.tokenizer.label_input_transform(
        greedy32, fp32.tokenizer.context_input_transform(context)[2]
    )[0]
    inputs = {
        "input_ids": ops.convert_to_tensor(ids),
        "attention_mask": ops.convert_to_tensor(mask),
        "labels": ops.convert_to_tensor(labels.astype("int32")),
    }
    logits32 = ops.convert_to_numpy(fp32.model(inputs)).astype("float32")
    logits16 = ops.convert_to_numpy(ops.cast(bf16._forecasting_model()(inputs), "float32"))

    results = {
        "backend": backend,
        "initializer_factor": args.initializer_factor,
        "greedy_token_agreement": float(same.mean()),
        "greedy_series_identical": float(same.all(axis=1).mean()),
        "quantile_rel_diff_bf16_vs_fp32": relative(q16, q32),
        "mean_rel_diff_bf16_vs_fp32": relative(m16, m32),
        "quantile_rel_diff_fp32_seed_vs_seed": relative(q32b, q32),
        "mean_rel_diff_fp32_seed_vs_seed": relative(m32b, m32),
        "logits_max_abs_diff": float(np.abs(logits16 - logits32).max()),
        "logits_std": float(logits32.std()),
        "logits_argmax_agreement": float((logits16.argmax(-1) == logits32.argmax(-1)).mean()),
    }
    print("| measure | value |")
    print("|---|---:|")
    for key, value in results.items():
        if key not in ("backend", "initializer_factor"):
            print(f"| {key} | {value:.4g} |")
    out = ROOT / "benchmarks" / "results" / f"bf16_accuracy_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
