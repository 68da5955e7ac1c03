"""Training-step time: dense Chronos T5 vs Mixture-of-Experts.

One training step is forward + backward + AdamW update, run by
`model.train_on_batch` after `model.compile(optimizer=AdamW, jit_compile=...)`
(`jit_compile=True` on JAX: the whole step is one XLA program; torch runs
eagerly, as Keras does by default there).

Models (all with the `chronos-t5-tiny` shape: d_model 256, d_ff 1024, 4 encoder
+ 4 decoder layers, 4 heads, vocabulary 4096; dropout 0.1 as in training):

* dense `ChronosT5`,
* `build_moe_chronos(base, E, k)` for E = 4, 16, 32 at k = 2 (cost vs expert
  count), and k = 1, 2, 4 at E = 8 (cost vs experts per series).

Batch: 32 series, context 512 tokens + EOS, prediction 64 tokens + EOS
(random token ids; the time does not depend on their values).

Measurement: every model is built and compiled first; each gets `--warmup`
untimed steps (the first includes tracing and XLA compilation on JAX). Then
`--repeats` rounds time one step of each model in turn (round robin, each
round starting one model later, so a change in background load hits all models
alike). Reported: the median wall
time per step, and the median process CPU time (all threads; less sensitive to
other processes on a shared machine), with the ratios MoE / dense and
E / (E=4) at the same k.

Usage (from the repository root):

    python benchmarks/moe_train_step.py                    # torch and JAX
    python benchmarks/moe_train_step.py --backend jax      # one backend
    python benchmarks/moe_train_step.py --quick            # smoke run (small shapes)
    python benchmarks/moe_train_step.py --models dense,E4k2,E32k2 --warmup 1 --repeats 2
                                                           # the two targets only

Each backend runs in its own subprocess (the script re-invokes itself with
`KERAS_BACKEND` set). Prints a Markdown table and writes
`benchmarks/results/moe_train_step_<backend>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

# chronos-t5-tiny.
FULL_SHAPE = dict(
    vocab_size=4096, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4, batch=32,
    context=512, prediction=64,
)  # fmt: skip
QUICK_SHAPE = dict(
    vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4, batch=4,
    context=32, prediction=8,
)  # fmt: skip

# key -> (label, num_experts, top_k); None = the dense model.
CONFIGS = {
    "dense": ("dense", None, None),
    "E4k2": ("MoE E=4 k=2", 4, 2),
    "E16k2": ("MoE E=16 k=2", 16, 2),
    "E32k2": ("MoE E=32 k=2", 32, 2),
    "E8k1": ("MoE E=8 k=1", 8, 1),
    "E8k2": ("MoE E=8 k=2", 8, 2),
    "E8k4": ("MoE E=8 k=4", 8, 4),
}

TARGETS = {"MoE E=4 k=2 / dense": 1.15, "MoE E=32 k=2 / MoE E=4 k=2": 1.2}


def log(message: str) -> None:
    print(f"[moe_train_step] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# One backend (runs in a subprocess with KERAS_BACKEND set)
# ---------------------------------------------------------------------------------


def make_batch(shape: dict, seed: int = 0) -> dict:
    """Training features as the Chronos tokenizer makes them: context + EOS,
    labels = prediction + EOS (random ids above the two special tokens)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch, vocab = shape["batch"], shape["vocab_size"]
    input_ids = rng.integers(2, vocab, (batch, shape["context"] + 1)).astype("int32")
    input_ids[:, -1] = 1
    labels = rng.integers(2, vocab, (batch, shape["prediction"] + 1)).astype("int32")
    labels[:, -1] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones(input_ids.shape, bool),
        "labels": labels,
    }


def build_model(shape: dict, num_experts: int | None, top_k: int | None, jit: bool):
    import keras

    from chronos_moe import ChronosT5, build_moe_chronos

    keras.utils.set_random_seed(0)
    model_shape = {k: shape[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads")}
    model = ChronosT5(
        **model_shape,
        num_layers=shape["num_layers"],
        chronos_config={
            "n_tokens": shape["vocab_size"],
            "context_length": shape["context"],
            "prediction_length": shape["prediction"],
        },
    )
    if num_experts is not None:
        model = build_moe_chronos(model, num_experts=num_experts, top_k=top_k)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4), jit_compile=jit)
    return model


def timed_step(model, batch) -> tuple[float, float]:
    """(wall s, process CPU s) of one `train_on_batch`; its returned loss is a
    host value, so the step has finished when the call returns."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args: argparse.Namespace) -> dict:
    import keras

    backend = keras.config.backend()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    jit = backend == "jax"
    batch = make_batch(shape)
    models = {}
    for key in args.models:
        label, num_experts, top_k = CONFIGS[key]
        start = time.perf_counter()
        model = build_model(shape, num_experts, top_k, jit)
        first, _ = timed_step(model, batch)
        for _ in range(args.warmup - 1):
            timed_step(model, batch)
        models[label] = (model, num_experts, top_k)
        log(
            f"{backend} {label}: built + {args.warmup} warm-up steps in "
            f"{time.perf_counter() - start:.1f}s (first step {first:.2f}s)"
        )
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in models}
    labels = list(models)
    for round_index in range(args.repeats):
        # Each round starts one model later, so that no model always runs first.
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            times[label].append(timed_step(models[label][0], batch))
        log(f"{backend} round {round_index + 1}/{args.repeats} done")
    rows = []
    for label, (model, num_experts, top_k) in models.items():
        walls = [wall for wall, _ in times[label]]
        cpus = [cpu for _, cpu in times[label]]
        rows.append(
            {
                "model": label,
                "num_experts": num_experts,
                "top_k": top_k,
                "parameters": int(model.count_params()),
                "median_s": statistics.median(walls),
                "min_s": min(walls),
                "cpu_median_s": statistics.median(cpus),
                "wall_s": walls,
                "cpu_s": cpus,
            }
        )
    add_ratios(rows)
    return {
        "backend": backend,
        "jit_compile": jit,
        "shape": shape,
        "quick": args.quick,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
        "machine": machine_info(),
    }


def add_ratios(rows: list[dict]) -> None:
    by_label = {row["model"]: row for row in rows}
    dense = by_label.get("dense")
    for row in rows:
        if dense is not None:
            row["vs_dense"] = row["median_s"] / dense["median_s"]
            row["cpu_vs_dense"] = row["cpu_median_s"] / dense["cpu_median_s"]
        reference = by_label.get(f"MoE E=4 k={row['top_k']}")
        if row["num_experts"] is not None and reference is not None:
            row["vs_e4"] = row["median_s"] / reference["median_s"]
            row["cpu_vs_e4"] = row["cpu_median_s"] / reference["cpu_median_s"]


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("keras", "torch", "jax", "jaxlib", "numpy")},
    }


# ---------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------


def run_backend(args: argparse.Namespace, backend: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable, str(Path(__file__).resolve()),
            "--child", "--backend", backend,
            "--warmup", str(args.warmup), "--repeats", str(args.repeats),
            "--models", ",".join(args.models), "--result-file", str(result_file),
        ] + (["--quick"] if args.quick else [])  # fmt: skip
        env = {**os.environ, "KERAS_BACKEND": backend}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        subprocess.run(command, env=env, check=True, timeout=args.timeout)
        return json.loads(result_file.read_text())


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| backend | model | params (M) | step (s) | × dense | × E=4 (same k) "
        "| CPU (s) | CPU × dense | CPU × E=4 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for r in result["rows"]:
            lines.append(
                f"| {result['backend']} | {r['model']} | {r['parameters'] / 1e6:.1f} "
                f"| {r['median_s']:.3f} | {ratio(r.get('vs_dense'))} | {ratio(r.get('vs_e4'))} "
                f"| {r['cpu_median_s']:.2f} | {ratio(r.get('cpu_vs_dense'))} "
                f"| {ratio(r.get('cpu_vs_e4'))} |"
            )
    return "\n".join(lines)


def target_lines(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        by_label = {row["model"]: row for row in result["rows"]}
        e4, e32 = by_label.get("MoE E=4 k=2", {}), by_label.get("MoE E=32 k=2", {})
        checks = {
            "MoE E=4 k=2 / dense": (e4.get("vs_dense"), e4.get("cpu_vs_dense")),
            "MoE E=32 k=2 / MoE E=4 k=2": (e32.get("vs_e4"), e32.get("cpu_vs_e4")),
        }
        for name, (wall, cpu) in checks.items():
            if wall is None:
                continue
            verdict = "met" if max(wall, cpu) <= TARGETS[name] else "MISSED"
            lines.append(
                f"- {result['backend']}: {name} = {wall:.2f}× wall, {cpu:.2f}× CPU "
                f"(target ≤ {TARGETS[name]}×): {verdict}"
                + (" (quick shapes, not the target shape)" if result["quick"] else "")
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=["torch", "jax", "both"], default="both", help="Keras backend(s)"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, 1 warm-up, 2 steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5)")
    parser.add_argument(
        "--models",
        default=",".join(CONFIGS),
        help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per backend")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = args.warmup or (1 if args.quick else 2)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(CONFIGS)}")

    if args.child:
        if os.environ.get("KERAS_BACKEND") != args.backend:
            raise SystemExit("--child expects KERAS_BACKEND to match --backend")
        args.result_file.write_text(json.dumps(measure(args), indent=2))
        return

    backends = ["torch", "jax"] if args.backend == "both" else [args.backend]
    results = []
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        log(f"measuring {backend}")
        result = run_backend(args, backend)
        results.append(result)
        suffix = "_quick" if args.quick else ""
        path = RESULTS_DIR / f"moe_train_step_{backend}{suffix}.json"
        path.write_text(json.dumps(result, indent=2))
        log(f"wrote {path.relative_to(ROOT)}")
    print(markdown_table(results))
    print()
    print("\n".join(target_lines(results)))


if __name__ == "__main__":
    main()
