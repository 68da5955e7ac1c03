"""First calls and steady latency: `predict` calls of random sizes, in a fresh process.

A service forecasts requests of every size. On JAX each new input shape is
traced and compiled, so chronos-moe pads the context to a ladder of lengths
(16, 24, 32, 48, 64, …), cuts the batch into chunks whose row counts lie
on a ladder too (`chronos_moe/shapes.py`) and keeps compiled programs in JAX's persistent
compilation cache (`CHRONOS_MOE_JAX_CACHE_DIR`), so that a second process
starts warm. This script measures what a user sees, each case in its own
process, on a random checkpoint with the shape of `amazon/chronos-t5-tiny`,
in three phases of 20 calls each (the same draws for every case):

1. **cold**: 20 calls with batch sizes drawn from 1–64 and context lengths
   from 20–512 (the first call is reported on its own);
2. **steady**: the same 20 calls again, every program compiled: the steady
   latency, which is what padding costs;
3. **new sizes** (JAX only): 20 calls of newly drawn sizes in the same warm
   process: what bounding the set of programs buys a process that keeps
   serving (torch compiles nothing, so for it this phase would only repeat
   the first with other sizes).

Cases: the reference (`chronos.ChronosPipeline`, torch) for the ratios;
chronos-moe on torch; JAX as before the buckets (every call at its own shape:
`chronos_moe.shapes` is patched out in that process), cache off; JAX with an
empty cache (the first process ever); JAX with the cache the previous case
filled (a second process).

Usage (from the repository root):

    python benchmarks/first_calls.py            # 3 x 20 calls, 20 samples
    python benchmarks/first_calls.py --quick    # 3 x 6 calls, 4 samples, smaller sizes
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

from predict_latency import build_checkpoint, make_context  # noqa: E402


def draws(calls: int, max_batch: int, max_context: int, seed: int = 0) -> list[tuple[int, int]]:
    """`calls` (batch size, context length) pairs, the same for every case."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(1, max_batch + 1)), int(rng.integers(20, max_context + 1)))
        for _ in range(calls)
    ]


def measure(args: argparse.Namespace) -> None:
    """One case, in this process: prints one JSON line of call times."""
    import numpy as np

    if args.implementation == "reference":
        import torch
        from chronos import ChronosPipeline

        pipeline = ChronosPipeline.from_pretrained(args.checkpoint, torch_dtype=torch.float32)

        def predict(context, seed):
            torch.manual_seed(seed)
            return pipeline.predict(torch.tensor(context), num_samples=args.num_samples)
    else:
        import chronos_moe.shapes
        from chronos_moe import ChronosPipeline

        if args.no_buckets:  # "before": every request compiled at its own shape
            chronos_moe.shapes.static_shapes = lambda: False
        pipeline = ChronosPipeline.from_pretrained(args.checkpoint)

        def predict(context, seed):
            return pipeline.predict(context, num_samples=args.num_samples, seed=seed)

    phases = {}
    for phase, calls in json.loads(args.draws).items():
        phases[phase] = []
        for index, (batch, length) in enumerate(calls):
            context = make_context(batch, length, seed=index)
            start = time.perf_counter()
            np.asarray(predict(context, index))
            phases[phase].append(time.perf_counter() - start)
    print(json.dumps(phases))


def run_case(
    args, implementation: str, backend: str, cache: str | None, buckets: bool = True
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["KERAS_BACKEND"] = backend
    env["CHRONOS_MOE_JAX_CACHE_DIR"] = cache or "off"
    phases = json.loads(args.draws_json)
    if backend != "jax":  # nothing to compile: new sizes cost what the first ones did
        del phases["new"]
    command = [sys.executable, __file__, "--child", implementation, "--checkpoint"]
    command += [str(args.checkpoint_dir), "--draws", json.dumps(phases)]
    command += ["--num-samples", str(args.num_samples)] + ([] if buckets else ["--no-buckets"])
    load_before = os.getloadavg()[0]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    load_after = os.getloadavg()[0]
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    phases = json.loads(completed.stdout.strip().splitlines()[-1])
    return {
        "first": phases["cold"][0],
        "cold": sum(phases["cold"]),
        "steady": statistics.median(phases["steady"]),
        "steady_total": sum(phases["steady"]),
        "new": sum(phases["new"]) if "new" in phases else None,
        # 1-minute load average before and after: a process that ran slow throughout shows
        # whether something else shared the machine (this one adds about 1-2 on 2 cores).
        "load": [round(load_before, 2), round(load_after, 2)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 calls, 4 samples, batch <= 8")
    parser.add_argument("--child", choices=["reference", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--draws", help=argparse.SUPPRESS)
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--no-buckets", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.implementation = args.child
        measure(args)
        return
    calls, max_batch, max_context = (6, 8, 128) if args.quick else (20, 64, 512)
    args.num_samples = args.num_samples or (4 if args.quick else 20)
    cold = draws(calls, max_batch, max_context)
    new = draws(calls, max_batch, max_context, seed=1)
    args.draws_json = json.dumps({"cold": cold, "steady": cold, "new": new})
    with tempfile.TemporaryDirectory() as folder:
        args.checkpoint_dir = build_checkpoint(Path(folder) / "checkpoint")
        cache = str(Path(folder) / "jax-cache")
        cases = [
            ("reference (torch)", "reference", "torch", None, True),
            ("chronos-moe torch", "ours", "torch", None, True),
            ("chronos-moe JAX, no buckets, cache off (before)", "ours", "jax", None, False),
            ("chronos-moe JAX, first process (empty cache)", "ours", "jax", cache, True),
            ("chronos-moe JAX, second process (warm cache)", "ours", "jax", cache, True),
        ]
        rows = []
        for label, implementation, backend, case_cache, buckets in cases:
            result = run_case(args, implementation, backend, case_cache, buckets)
            rows.append((label, result))
            print(f"{label}: {json.dumps(result)}", file=sys.stderr, flush=True)
    reference = rows[0][1]
    print(f"3 x {calls} calls, batch 1-{max_batch}, context 20-{max_context}, ")
    print(f"{args.num_samples} samples; draws {args.draws_json}\n")
    print(
        f"| case | first call | {calls} calls cold | steady (median call) | "
        f"{calls} calls again | {calls} new sizes |"
    )
    print("|---|---:|---:|---:|---:|---:|")

    before = rows[2][1]  # JAX at every request's own shape

    def cell(result, key, unit="s", digits=1):
        if result[key] is None:
            return "—"
        base = reference if reference[key] is not None else before
        return f"{result[key]:.{digits}f} {unit} ({base[key] / result[key]:.2f}×)"

    for label, result in rows:
        print(
            f"| {label} | {cell(result, 'first', digits=2)} | {cell(result, 'cold')} | "
            f"{cell(result, 'steady', digits=2)} | {cell(result, 'steady_total')} | "
            f"{cell(result, 'new')} |"
        )
    print(
        "\n(×: the reference's time ÷ the case's, above 1 is faster than the reference; "
        "new sizes: JAX before ÷ the case's)"
    )


if __name__ == "__main__":
    main()
