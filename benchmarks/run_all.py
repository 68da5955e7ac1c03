"""Reproduces every figure in `benchmarks/RESULTS.md`, one script after another.

Each step is a documented command of RESULTS.md, run as its own process with
the environment it needs (`KERAS_BACKEND`); each script writes its JSON under
`benchmarks/results/` and prints its table, which this driver passes through.
Run it on an otherwise idle machine (the figures are wall-clock times):

    flock /tmp/cpu.lock python benchmarks/run_all.py            # all (~1 h)
    python benchmarks/run_all.py --quick                        # smoke run, small shapes
    python benchmarks/run_all.py --only train,moe               # a subset
    python benchmarks/run_all.py --dry-run                      # print the commands

Steps (RESULTS.md section → command):

* `forecast`: "Forecast latency" —
  `predict_latency.py --repeats 2 --max-wait 120 --compute-dtypes float32,bfloat16`
  (reference, torch and JAX, chronos-moe in float32 and bfloat16);
* `bolt`: "Chronos-Bolt forecast latency" — `bolt_latency.py --threads 1`
  (reference Bolt, chronos-moe Bolt on torch and JAX, chronos-moe T5);
* `bf16`: "bfloat16 forecasting: accuracy against float32" —
  `bf16_accuracy.py` on torch and on JAX;
* `train`: "Training throughput" — `train_throughput.py` (every case);
* `moe`: "MoE training step" — `moe_train_step.py` on torch
  (`--models dense,E4k2,E32k2 --warmup 2 --repeats 5`) and on JAX
  (`--warmup 1 --repeats 3`);
* `token`: "Token-level experts" — `token_moe_step.py` on torch (`--repeats 3`)
  and on JAX (`--models dense,tokE8k2w256 --repeats 2`);
* `data`: "Data pipeline throughput" — `data_throughput.py`;
* `gpu` (only when asked for: `--only gpu`, on a machine with a GPU): "GPU" —
  `gpu.py` (torch and JAX, one process each; `--quick`: its `--dry-run`, which
  runs on a CPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# name -> list of (KERAS_BACKEND, script, arguments), exactly as RESULTS.md documents them.
STEPS: dict[str, list[tuple[str, str, list[str]]]] = {
    "forecast": [
        (
            "torch",
            "predict_latency.py",
            ["--repeats", "2", "--max-wait", "120", "--compute-dtypes", "float32,bfloat16"],
        )
    ],
    "bolt": [("torch", "bolt_latency.py", ["--threads", "1"])],
    "bf16": [("torch", "bf16_accuracy.py", []), ("jax", "bf16_accuracy.py", [])],
    "train": [("torch", "train_throughput.py", [])],
    "moe": [
        (
            "torch",
            "moe_train_step.py",
            [
                "--backend",
                "torch",
                "--models",
                "dense,E4k2,E32k2",
                "--warmup",
                "2",
                "--repeats",
                "5",
            ],
        ),
        ("jax", "moe_train_step.py", ["--backend", "jax", "--warmup", "1", "--repeats", "3"]),
    ],
    "token": [
        ("torch", "token_moe_step.py", ["--backend", "torch", "--repeats", "3"]),
        (
            "jax",
            "token_moe_step.py",
            ["--backend", "jax", "--models", "dense,tokE8k2w256", "--repeats", "2"],
        ),
    ],
    "data": [("torch", "data_throughput.py", [])],
    "gpu": [("torch", "gpu.py", [])],  # starts its own torch and JAX processes
}
# Run when no --only is given: all but the GPU benchmark (it stops without a GPU).
DEFAULT_STEPS = [step for step in STEPS if step != "gpu"]

# --quick: the scripts' own smoke-run flag instead of the documented repeat counts.
QUICK_ARGUMENTS: dict[str, list[str]] = {
    "predict_latency.py": ["--quick"],
    "bolt_latency.py": ["--quick"],
    "train_throughput.py": ["--quick"],
    "moe_train_step.py": ["--quick"],
    "token_moe_step.py": ["--quick"],
    "data_throughput.py": ["--quick"],
    "bf16_accuracy.py": [],  # one fixed size, about a minute
    "gpu.py": ["--dry-run"],
}


def commands(steps: list[str], quick: bool) -> list[tuple[str, list[str], dict[str, str]]]:
    """`(label, argv, env)` of every command to run, in order."""
    result = []
    for step in steps:
        for backend, script, arguments in STEPS[step]:
            if quick:
                keep = [a for a in arguments if a in ("--backend", "torch", "jax")]
                arguments = keep + QUICK_ARGUMENTS[script]
            argv = [sys.executable, str(BENCHMARKS / script), *arguments]
            env = {**os.environ, "KERAS_BACKEND": backend}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            result.append((f"{step}: KERAS_BACKEND={backend} {script}", argv, env))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (default: all but gpu, in that order)",
    )
    parser.add_argument("--quick", action="store_true", help="each script's smoke run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    steps = args.only.split(",")
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown --only {unknown}; choose from {list(STEPS)}")

    failed = []
    for label, argv, env in commands(steps, args.quick):
        shown = " ".join(["python", str(Path(argv[1]).relative_to(ROOT)), *argv[2:]])
        print(f"\n## {label}\n$ KERAS_BACKEND={env['KERAS_BACKEND']} {shown}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        code = subprocess.run(argv, env=env, cwd=ROOT).returncode
        print(f"({time.perf_counter() - start:.0f} s, exit code {code})", flush=True)
        if code:
            failed.append(label)
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
