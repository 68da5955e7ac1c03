"""Token-level experts: training step and forecast, dense vs MoE, same run.

Models (all with the `chronos-t5-tiny` shape: d_model 256, d_ff 1024, 4 + 4
layers, vocabulary 4096, dropout 0.1) built by `build_moe_chronos(...,
level="token")` with E = 8 experts, top-2 routing and the shared expert (the
upcycled dense feed-forward):

* `dense`: the `ChronosT5` itself;
* `tokE8k2`: experts in every block, each as wide as the dense layer (d_ff
  1024, routed experts = copies of `wi`);
* `tokE8k2w256`: experts in every block, 256 wide (fine-grained: the two
  routed experts cost half a dense feed-forward);
* `tokE8k2e2`: experts in every other block (`moe_every=2`), 512 wide;
* `tokE8k2e2w256`: experts in every other block, 256 wide.

Training step: `train_on_batch` (forward + backward + AdamW) on 32 series,
context 512 + EOS, prediction 64 + EOS (as `moe_train_step.py`, whose
helpers this script reuses). Forecast: `ChronosPipeline.predict` of
`--series` series (context 512, horizon 64, 20 samples). Each model gets
`--warmup` untimed calls, then `--repeats` rounds time each model in turn
(round robin). Reported: medians, wall and process CPU, and the ratios to the
dense model of the same run.

Usage (from the repository root):

    python benchmarks/token_moe_step.py --backend torch
    python benchmarks/token_moe_step.py --backend jax --models dense,tokE8k2e2
    python benchmarks/token_moe_step.py --quick            # smoke run

Writes `benchmarks/results/token_moe_step_<backend>.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moe_train_step import FULL_SHAPE, QUICK_SHAPE, machine_info, make_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

# key -> (label, build_moe_chronos keyword arguments or None for dense);
# widths as fractions of d_ff.
CONFIGS = {
    "dense": ("dense", None),
    "tokE8k2": ("token E=8 k=2, every block, width d_ff", {"moe_every": 1, "width": 1.0}),
    "tokE8k2w256": ("token E=8 k=2, every block, width d_ff/4", {"moe_every": 1, "width": 0.25}),
    "tokE8k2e2": ("token E=8 k=2, every 2nd block, width d_ff/2", {"moe_every": 2, "width": 0.5}),
    "tokE8k2e2w256": (
        "token E=8 k=2, every 2nd block, width d_ff/4",
        {"moe_every": 2, "width": 0.25},
    ),
}
TARGET = 1.3


def log(message: str) -> None:
    print(f"[token_moe_step] {message}", file=sys.stderr, flush=True)


def build(shape: dict, settings: dict | None, jit: bool):
    import keras

    from chronos_moe import ChronosT5, build_moe_chronos

    keras.utils.set_random_seed(0)
    model = ChronosT5(
        **{k: shape[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads")},
        num_layers=shape["num_layers"],
        chronos_config={
            "n_tokens": shape["vocab_size"],
            "context_length": shape["context"],
            "prediction_length": shape["prediction"],
        },
    )
    if settings is not None:
        model = build_moe_chronos(
            model,
            num_experts=8,
            top_k=2,
            level="token",
            moe_every=settings["moe_every"],
            expert_hidden_dim=int(shape["d_ff"] * settings["width"]),
        )
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4), jit_compile=jit)
    return model


def timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    from chronos_moe import ChronosPipeline

    backend = keras.config.backend()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    batch = make_batch(shape)
    rng = np.random.default_rng(0)
    contexts = np.cumsum(rng.normal(size=(args.series, shape["context"])), axis=1) + 50
    models = {}
    for key in args.models:
        label, settings = CONFIGS[key]
        model = build(shape, settings, jit=backend == "jax")
        pipeline = ChronosPipeline(model)
        jobs = {
            "train": lambda model=model: model.train_on_batch(batch),
            "forecast": lambda p=pipeline: p.predict(contexts, num_samples=20, seed=0),
        }
        for _ in range(args.warmup):
            for job in jobs.values():
                job()
        models[label] = (model, jobs)
        log(f"{backend} {label}: built and warmed up")
    times = {label: {"train": [], "forecast": []} for label in models}
    labels = list(models)
    for round_index in range(args.repeats):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            for job_name, job in models[label][1].items():
                times[label][job_name].append(timed(job))
        log(f"{backend} round {round_index + 1}/{args.repeats} done")
    rows = []
    for label, (model, _) in models.items():
        row = {"model": label, "parameters": int(model.count_params())}
        for job_name, values in times[label].items():
            row[f"{job_name}_s"] = statistics.median(wall for wall, _ in values)
            row[f"{job_name}_cpu_s"] = statistics.median(cpu for _, cpu in values)
            row[f"{job_name}_walls"] = [wall for wall, _ in values]
        rows.append(row)
    dense = next((row for row in rows if row["model"] == "dense"), None)
    for row in rows:
        for job_name in ("train", "forecast"):
            if dense is not None:
                row[f"{job_name}_vs_dense"] = row[f"{job_name}_s"] / dense[f"{job_name}_s"]
                row[f"{job_name}_cpu_vs_dense"] = (
                    row[f"{job_name}_cpu_s"] / dense[f"{job_name}_cpu_s"]
                )
    return {
        "backend": backend,
        "shape": shape,
        "series": args.series,
        "quick": args.quick,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
        "machine": machine_info(),
    }


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| backend | model | params (M) | train step (s) | × dense | CPU × dense "
        "| forecast (s) | × dense | CPU × dense |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for r in result["rows"]:
            lines.append(
                f"| {result['backend']} | {r['model']} | {r['parameters'] / 1e6:.1f} "
                f"| {r['train_s']:.3f} | {r.get('train_vs_dense', 0):.2f}× "
                f"| {r.get('train_cpu_vs_dense', 0):.2f}× "
                f"| {r['forecast_s']:.3f} | {r.get('forecast_vs_dense', 0):.2f}× "
                f"| {r.get('forecast_cpu_vs_dense', 0):.2f}× |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["torch", "jax", "both"], default="torch")
    parser.add_argument("--quick", action="store_true", help="small shapes, 1 warm-up, 2 rounds")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3)")
    parser.add_argument("--series", type=int, default=32, help="series per forecast")
    parser.add_argument(
        "--models", default=",".join(CONFIGS), help="subset of " + ",".join(CONFIGS)
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per backend")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = args.warmup or 1
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(CONFIGS)}")
    if args.child:
        args.result_file.write_text(json.dumps(measure(args), indent=2))
        return
    results = []
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for backend in ["torch", "jax"] if args.backend == "both" else [args.backend]:
        with tempfile.TemporaryDirectory() as tmp:
            result_file = Path(tmp) / "result.json"
            command = [
                sys.executable, str(Path(__file__).resolve()), "--child", "--backend", backend,
                "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                "--series", str(args.series), "--models", ",".join(args.models),
                "--result-file", str(result_file),
            ] + (["--quick"] if args.quick else [])  # fmt: skip
            env = {**os.environ, "KERAS_BACKEND": backend}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            subprocess.run(command, env=env, check=True, timeout=args.timeout)
            result = json.loads(result_file.read_text())
        results.append(result)
        suffix = "_quick" if args.quick else ""
        (RESULTS_DIR / f"token_moe_step_{backend}{suffix}.json").write_text(
            json.dumps(result, indent=2)
        )
    print(markdown_table(results))
    for result in results:
        for row in result["rows"]:
            if row["model"] == "dense":
                continue
            worst = max(row["train_vs_dense"], row["forecast_vs_dense"])
            verdict = "met" if worst <= TARGET else "MISSED"
            print(
                f"- {result['backend']} {row['model']}: train {row['train_vs_dense']:.2f}×, "
                f"forecast {row['forecast_vs_dense']:.2f}× (target ≤ {TARGET}×): {verdict}"
            )


if __name__ == "__main__":
    main()
