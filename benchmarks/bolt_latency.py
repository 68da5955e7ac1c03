"""Chronos-Bolt forecast latency: reference `chronos.ChronosBoltPipeline` vs `chronos-moe`.

All implementations load the SAME checkpoints: a random Chronos-Bolt model
with the shape and `chronos_config` of the released `amazon/chronos-bolt-<size>`
(context 2048, prediction 64, patches of 16, 9 quantiles, `[REG]` token),
written by the reference's own `ChronosBoltModelForForecasting`
(`tests.checkpoint_factory.make_bolt_reference_checkpoint`), and, for the
comparison with Chronos T5, a random model of the shape of
`amazon/chronos-t5-<size>` (`predict_latency.build_checkpoint`). No download;
latency does not depend on the weights' values.

One subprocess per chronos-moe backend (`KERAS_BACKEND` is fixed per
process). Each holds three pipelines: the reference Bolt (torch, float32),
chronos-moe's `ChronosBoltPipeline` and chronos-moe's `ChronosPipeline` on
the T5 checkpoint. For every case (series × context length) each one makes a
first call (on JAX it traces and compiles; it is also the warm-up), then
`--repeats` timed calls, interleaved: reference, chronos-moe, T5, then the
next repeat in a rotated order, so that a change of machine load hits all
alike and the ratios stay fair on a shared machine.

Measured per case and implementation:

* first call: wall time of the first `predict` of that shape in the process.
* steady: the median wall time of the repeats; steady CPU: the median CPU
  time (user + system, all threads) of the same calls.
* speed-up: reference / chronos-moe (>1: chronos-moe is faster), wall and CPU.
* T5 ÷ Bolt: chronos-moe's T5 forecast (20 samples, top-k 50, 64 steps) of
  the same series over chronos-moe's Bolt forecast, same backend. T5 reads at
  most 512 steps, so it runs on the 512-step cases only.
* max rel. diff: max |ours − reference| / max |reference| of the quantiles:
  the same checkpoint and inputs give the same forecast.
* other load: cores kept busy by OTHER processes during the timed calls.

Usage (from the repository root):

    python benchmarks/bolt_latency.py                    # small: 1, 32, 256 series × 512, 2048
    python benchmarks/bolt_latency.py --quick            # smoke run (tiny, 2 small cases)
    python benchmarks/bolt_latency.py --sizes small,base --threads 1
    python benchmarks/bolt_latency.py --backends jax --t5-series 1,32

Prints one Markdown table and writes `benchmarks/results/bolt_latency_<backend>.json`
(`..._quick.json` with `--quick`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from predict_latency import (  # noqa: E402
    RESULTS_DIR,
    TOP_K,
    build_checkpoint,
    fmt,
    machine_info,
    make_context,
    peak_rss_mb,
    ratio,
    run_script,
    timed_call,
    wait_until_quiet,
)

from chronos_moe.config import T5_PRESETS  # noqa: E402  (no Keras import: the backend is free)

# The `chronos_config` of the released amazon/chronos-bolt-* checkpoints.
BOLT_CONTEXT, BOLT_HORIZON, BOLT_PATCH = 2048, 64, 16
BOLT_SIZES = ("tiny", "mini", "small", "base")
# (n_series, context_length)
CASES = [(1, 512), (32, 512), (256, 512), (1, 2048), (32, 2048), (256, 2048)]
QUICK_CASES = [(1, 512), (8, 2048)]
T5_SAMPLES = 20  # the reference ChronosPipeline's default
T5_CONTEXT = 512  # chronos-t5-*'s context_length: T5 reads no more


def log(message: str) -> None:
    print(f"[bolt_latency] {message}", file=sys.stderr, flush=True)


def build_bolt_checkpoint(directory: Path, size: str, seed: int = 0) -> Path:
    from tests.checkpoint_factory import make_bolt_reference_checkpoint

    return make_bolt_reference_checkpoint(
        directory,
        **T5_PRESETS[size],
        context_length=BOLT_CONTEXT,
        prediction_length=BOLT_HORIZON,
        input_patch_size=BOLT_PATCH,
        use_reg_token=True,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------
# One backend's measurements (runs in a subprocess)
# ---------------------------------------------------------------------------------------


def case_calls(reference, ours, t5, context) -> dict:
    """`{implementation: predict(seed)}` on the same `(n_series, time)` float32
    series: the reference Bolt, chronos-moe's Bolt and (unless `t5` is None)
    chronos-moe's T5; each returns a numpy array."""
    import torch

    batch = torch.tensor(context)
    calls = {
        "reference": lambda seed: reference.predict(batch, BOLT_HORIZON).numpy(),
        "chronos-moe": lambda seed: ours.predict(context, BOLT_HORIZON),
    }
    if t5 is not None:
        calls["chronos-moe T5"] = lambda seed: t5.predict(
            context, BOLT_HORIZON, num_samples=T5_SAMPLES, top_k=TOP_K, seed=seed
        )
    return calls


def measure(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from chronos_moe.pipeline import ChronosPipeline
    from chronos_moe.pipeline_bolt import ChronosBoltPipeline
    from tests.checkpoint_factory import load_bolt_reference_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    reference = load_bolt_reference_pipeline(args.bolt_checkpoint)
    ours = ChronosBoltPipeline.from_pretrained(args.bolt_checkpoint)
    t5 = ChronosPipeline.from_pretrained(args.t5_checkpoint)
    cases = [tuple(int(x) for x in case.split("x")) for case in args.cases.split(",")]
    t5_series = {int(n) for n in args.t5_series.split(",") if n}

    rows = []
    for n_series, context_length in cases:
        context = make_context(n_series, context_length)
        with_t5 = context_length == T5_CONTEXT and n_series in t5_series
        calls = case_calls(reference, ours, t5 if with_t5 else None, context)
        tag = f"{args.backend}/{n_series}x{context_length}"
        first, outputs = {}, {}
        for name, predict in calls.items():
            call = timed_call(predict, 0)
            outputs[name], first[name] = call.pop("output"), call
            log(f"{tag} {name}: first call {call['wall_s']:.3f}s")
        difference = np.max(np.abs(outputs["chronos-moe"] - outputs["reference"]))
        max_relative_difference = float(difference / np.max(np.abs(outputs["reference"])))
        for i in range(args.warmup):
            for predict in calls.values():
                predict(1000 + i)
        timed: dict[str, list[dict]] = {name: [] for name in calls}
        names = list(calls)
        for i in range(args.repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotated order
                call = timed_call(calls[name], 1 + i)
                call.pop("output")
                timed[name].append(call)
            log(
                f"{tag} repeat {i + 1}/{args.repeats}: "
                + ", ".join(f"{name} {timed[name][-1]['wall_s']:.3f}s" for name in names)
            )
        row = {
            "size": args.size,
            "backend": args.backend,
            "n_series": n_series,
            "context_length": context_length,
            "prediction_length": BOLT_HORIZON,
            "max_relative_difference": max_relative_difference,
        }
        loads = []
        for name, measured in timed.items():
            key = {"reference": "ref", "chronos-moe": "ours", "chronos-moe T5": "t5"}[name]
            row[f"{key}_first_call_s"] = first[name]["wall_s"]
            row[f"{key}_steady_s"] = statistics.median(c["wall_s"] for c in measured)
            row[f"{key}_steady_cpu_s"] = statistics.median(c["cpu_s"] for c in measured)
            row[f"{key}_calls"] = measured
            loads += [c["background_cores"] for c in measured if c["background_cores"] is not None]
        row["speedup_steady"] = row["ref_steady_s"] / row["ours_steady_s"]
        row["speedup_steady_cpu"] = row["ref_steady_cpu_s"] / row["ours_steady_cpu_s"]
        if "t5_steady_s" in row:
            row["t5_over_bolt"] = row["t5_steady_s"] / row["ours_steady_s"]
        row["background_load_cores"] = statistics.mean(loads) if loads else None
        rows.append(row)

    if args.backend == "torch":
        threads = {"torch_num_threads": torch.get_num_threads()}
    else:
        import jax

        threads = {
            "torch_num_threads": torch.get_num_threads(),
            "jax_devices": [str(d) for d in jax.devices()],
        }
    return {"rows": rows, "peak_rss_mb": peak_rss_mb(), **threads}


# ---------------------------------------------------------------------------------------
# Orchestration (top-level run)
# ---------------------------------------------------------------------------------------


def run_child(args, backend: str, size: str, bolt: Path, t5: Path, cases: str) -> dict:
    if args.max_wait > 0:
        wait_until_quiet(args.max_wait, args.quiet_threshold)
    arguments = [
        "--only-backend", backend,
        "--size", size,
        "--bolt-checkpoint", str(bolt),
        "--t5-checkpoint", str(t5),
        "--cases", cases,
        "--t5-series", args.t5_series,
        "--repeats", str(args.repeats),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
    ]  # fmt: skip
    return run_script(str(Path(__file__).resolve()), arguments, backend, args.threads, args.timeout)


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| backend | size | series × context | reference first / steady (ms) "
        "| chronos-moe first / steady (ms) | speed-up | speed-up (CPU) "
        "| chronos-moe T5 steady (ms) | T5 ÷ Bolt | max rel. diff | other load (cores) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t5 = "—" if "t5_steady_s" not in r else f"{1000 * r['t5_steady_s']:.0f}"
        lines.append(
            f"| {r['backend']} | {r['size']} | {r['n_series']} × {r['context_length']} "
            f"| {1000 * r['ref_first_call_s']:.0f} / {1000 * r['ref_steady_s']:.0f} "
            f"| {1000 * r['ours_first_call_s']:.0f} / {1000 * r['ours_steady_s']:.0f} "
            f"| {ratio(r['speedup_steady'])} | {ratio(r['speedup_steady_cpu'])} "
            f"| {t5} | {ratio(r.get('t5_over_bolt'))} | {r['max_relative_difference']:.1e} "
            f"| {fmt(r['background_load_cores'])} |"
        )
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> None:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for backend in backends:
        if backend not in ("torch", "jax"):
            raise SystemExit(f"--backends: unknown backend {backend!r} (torch, jax)")
    for size in sizes:
        if size not in BOLT_SIZES:
            raise SystemExit(f"--sizes: unknown size {size!r} {BOLT_SIZES}")
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",") if c]
    case_list = ",".join(f"{n}x{length}" for n, length in cases)

    info = machine_info()
    log(f"machine: {info['cpu']}, {info['usable_cores']} cores, {info['memory_gb']} GB")
    started = time.perf_counter()
    rows, processes = [], {}
    with tempfile.TemporaryDirectory(prefix="chronos-bolt-random-") as tmp:
        for size in sizes:
            bolt = build_bolt_checkpoint(Path(tmp) / f"bolt-{size}", size)
            t5 = build_checkpoint(Path(tmp) / f"t5-{size}", shape=T5_PRESETS[size])
            log(f"checkpoints: {bolt}, {t5}")
            for backend in backends:
                result = run_child(args, backend, size, bolt, t5, case_list)
                rows += result.pop("rows")
                processes[f"{backend}/{size}"] = result
    table = markdown_table(rows)
    print()
    print(table)
    print()
    print(
        f"Machine: {info['cpu']}, {info['usable_cores']} cores, {info['memory_gb']} GB RAM, "
        f"no GPU. torch {info['versions']['torch']}, jax {info['versions']['jax']}, "
        f"keras {info['versions']['keras']}, transformers {info['versions']['transformers']}, "
        f"chronos-forecasting {info['versions']['chronos-forecasting']}. "
        f"Threads: {args.threads or 'default'}. "
        f"Total wall time {time.perf_counter() - started:.0f}s."
    )

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", *sys.argv])
    for backend in backends:
        selected = [r for r in rows if r["backend"] == backend]
        path = RESULTS_DIR / f"bolt_latency_{backend}{'_quick' if args.quick else ''}.json"
        payload = {
            "command": command,
            "machine": info,
            "settings": {
                "sizes": sizes,
                "cases": case_list,
                "t5_series": args.t5_series,
                "t5_num_samples": T5_SAMPLES,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "threads": args.threads or "default",
            },
            "processes": {k: v for k, v in processes.items() if k.startswith(backend)},
            "results": selected,
            "markdown": markdown_table(selected),
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backends", default="torch,jax", help="chronos-moe backends (default: torch,jax)"
    )
    parser.add_argument(
        "--sizes", default="small", help=f"Bolt sizes, comma-separated, of {BOLT_SIZES}"
    )
    parser.add_argument(
        "--cases",
        help="comma-separated SERIESxCONTEXT, e.g. 1x512,32x2048 (default: 1, 32, 256 series "
        "× 512, 2048)",
    )
    parser.add_argument(
        "--t5-series",
        default="1,32",
        help="series counts of the 512-step cases that also time chronos-moe's T5 (20 samples; "
        "256 takes minutes per call); empty: none (default: 1,32)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls each (default: 3)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed calls after the first (default: 0)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny, 2 small cases, 1 repeat"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch and XLA (0: the libraries' defaults). On a machine shared "
        "with other jobs, 1 avoids OpenMP's oversubscription slow-down.",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=0,
        help="before each backend's process, wait up to this many seconds for other processes "
        "to go quiet (default: 0)",
    )
    parser.add_argument("--quiet-threshold", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timeout", type=float, default=7200, help="seconds per subprocess (default: 7200)"
    )
    # Internal: one backend's measurements in this process.
    parser.add_argument("--only-backend", choices=["torch", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--bolt-checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--t5-checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = "tiny", min(args.repeats, 1)
        args.t5_series = "1" if args.t5_series == "1,32" else args.t5_series

    if args.only_backend:
        args.backend = args.only_backend
        active = os.environ.get("KERAS_BACKEND")
        if active != args.backend:
            raise RuntimeError(f"KERAS_BACKEND={active!r} but --only-backend={args.backend!r}")
        Path(args.result_file).write_text(json.dumps(measure(args)))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
