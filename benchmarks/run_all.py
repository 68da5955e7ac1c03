"""Reproduces every figure in `benchmarks/RESULTS.md`, one script after another.

Each step is a documented command of RESULTS.md, run as its own process with
the environment it needs (`KERAS_BACKEND`); each script writes its JSON under
`benchmarks/results/` and prints its table, which this driver passes through.
Run it on an otherwise idle machine (the figures are wall-clock times):

    flock /tmp/cpu.lock python benchmarks/run_all.py            # all but gpu, quality (~2.5 h)
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
* `token`: "Token-level experts" — `token_moe_step.py` on torch and on JAX
  (8 series, `--repeats 2`), dense and three layouts; `token_dispatch.py` (JAX);
* `data`: "Data pipeline throughput" — `data_throughput.py`;
* `first_calls`: "First calls on JAX" — `first_calls.py` (its own process per
  case: the reference, torch and three JAX cases; ~55 min);
* `profile`: "JAX float32 training on this CPU" — `profile_train_step.py`;
* `distribution`: "Training state per device" — `distribution_memory.py` on
  JAX with `JAX_NUM_CPU_DEVICES=8` (simulated devices);
* `reliability`: the early-exit timings of docs/reliability.md —
  `reliability_timings.py`;

and only when asked for (`--only NAME`):

* `gpu` (on a machine with a GPU): "GPU" — `gpu.py` (torch and JAX, one
  process each; `--quick`: its `--dry-run`, which runs on a CPU);
* `quality`: "Quality study" — `quality.py --output-dir
  benchmarks/results/quality` (~1.5 h on 2 idle cores; it downloads the wheels
  of its real-data benchmark from the package registry).
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
# The token-level layouts of RESULTS.md (the full-width one is left out: 2-3x dense).
TOKEN_MODELS = "dense,tokE8k2w256,tokE8k2e2,tokE8k2e2w256"
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
        ("torch", "token_moe_step.py", ["--backend", "torch", "--models", TOKEN_MODELS]),
        (
            "jax",
            "token_moe_step.py",
            ["--backend", "jax", "--models", TOKEN_MODELS, "--series", "8", "--repeats", "2"],
        ),
        ("jax", "token_dispatch.py", []),
    ],
    "data": [("torch", "data_throughput.py", [])],
    "first_calls": [("torch", "first_calls.py", [])],  # one process per case, either backend
    "profile": [("torch", "profile_train_step.py", [])],  # the reference (torch) and JAX
    "distribution": [("jax", "distribution_memory.py", [])],
    "reliability": [("torch", "reliability_timings.py", [])],
    "gpu": [("torch", "gpu.py", [])],  # starts its own torch and JAX processes
    "quality": [("torch", "quality.py", ["--output-dir", "benchmarks/results/quality"])],
}
# Only with --only: the GPU benchmark stops without a GPU, the study takes 1.5 h.
OPT_IN_STEPS = ("gpu", "quality")
DEFAULT_STEPS = [step for step in STEPS if step not in OPT_IN_STEPS]
# Environment a script needs besides KERAS_BACKEND.
SCRIPT_ENV: dict[str, dict[str, str]] = {
    "distribution_memory.py": {"JAX_NUM_CPU_DEVICES": "8"},
}

# --quick: the scripts' own smoke-run flag instead of the documented repeat counts.
QUICK_ARGUMENTS: dict[str, list[str]] = {
    "predict_latency.py": ["--quick"],
    "bolt_latency.py": ["--quick"],
    "train_throughput.py": ["--quick"],
    "moe_train_step.py": ["--quick"],
    "token_moe_step.py": ["--quick"],
    "token_dispatch.py": ["--quick"],
    "data_throughput.py": ["--quick"],
    "bf16_accuracy.py": [],  # one fixed size, about a minute
    "first_calls.py": ["--quick"],
    "profile_train_step.py": ["--quick"],
    "distribution_memory.py": [],  # memory of one step per layout, a few minutes
    "reliability_timings.py": ["--repeats", "2"],
    "gpu.py": ["--dry-run"],
    "quality.py": ["--output-dir", "benchmarks/results/quality-quick", "--quick"],
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
            env = {**os.environ, **SCRIPT_ENV.get(script, {}), "KERAS_BACKEND": backend}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            result.append((f"{step}: KERAS_BACKEND={backend} {script}", argv, env))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (default: all but "
        f"{' and '.join(OPT_IN_STEPS)}, in that order)",
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
        extra = SCRIPT_ENV.get(Path(argv[1]).name, {})
        shown = " ".join(
            [*(f"{key}={value}" for key, value in extra.items()), "python"]
            + [str(Path(argv[1]).relative_to(ROOT)), *argv[2:]]
        )
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
