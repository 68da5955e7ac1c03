"""Forecast latency: reference `chronos.ChronosPipeline` vs `chronos-moe`.

Both implementations load the SAME checkpoint: a randomly initialised model
with the exact shape and `chronos_config` of the released
`amazon/chronos-t5-tiny`, written once with transformers' `save_pretrained` into
a temporary directory (no download; latency does not depend on the weights'
values).

Every (implementation, backend, scenario) is measured in its own subprocess —
the script re-invokes itself with `--only ref|ours --backend X --scenario S` —
so that the peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) of one does not mix
with another's, and each chronos-moe run starts cold (its first call includes
compilation on JAX). chronos-moe's backend is chosen by the subprocess'
`KERAS_BACKEND`; the reference always runs on torch.

Measured per run:

* first call: the first `predict` in a fresh process, after loading (includes
  `jax.jit` tracing and XLA compilation on JAX; one-time allocator / oneDNN
  set-up on torch). It also serves as the warm-up.
* steady: the median wall time of `--repeats` further calls (after `--warmup`
  more untimed calls), each with a different seed.
* steady CPU: the median CPU time (user + system, all threads) of the same
  calls. With `--threads 1` it is what the wall time would be on an idle
  machine, so it stays comparable when other jobs share the CPU.
* speed-up: reference / chronos-moe, for the same scenario (wall and CPU).
* peak RSS: `ru_maxrss` of the measuring process at the end.
* other load: cores kept busy by OTHER processes during the timed calls
  (/proc/stat minus this process); well above 0 means the wall times competed
  for the CPU and only the CPU-time columns are reliable.

The 256-series scenario ("large", batch throughput) runs the reference in
chunks of `--reference-batch` series (32): given all 256 at once it copies the
encoder output and the cross-attention keys/values for each of the 5120
sample rows, about 30 GB. chronos-moe gets all 256 series in one `predict`
(its `batch_size` bounds the memory). It runs with half the repeats (at least
one) because the reference takes minutes per call.

Usage (from the repository root):

    KERAS_BACKEND=torch python benchmarks/predict_latency.py             # 32, 1 and 256 series
    KERAS_BACKEND=torch python benchmarks/predict_latency.py --quick     # smoke run (~1 min)
    KERAS_BACKEND=torch python benchmarks/predict_latency.py --no-large  # without 256 series
    # chronos-moe also with ChronosPipeline(compute_dtype="bfloat16")
    KERAS_BACKEND=torch python benchmarks/predict_latency.py --compute-dtypes float32,bfloat16
    # on a machine shared with other jobs: one thread each, compare CPU times
    KERAS_BACKEND=torch python benchmarks/predict_latency.py --threads 1

Prints one Markdown table and writes `benchmarks/results/predict_latency_<backend>.json`
(`..._<backend>_quick.json` with `--quick`) for each chronos-moe backend; each
file also holds the reference rows and the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from chronos_moe.config import ChronosConfig  # no Keras import: the backend is still free

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

# The `chronos_config` block of the released amazon/chronos-t5-* checkpoints
# (ChronosConfig's defaults are that block).
CHRONOS_CONFIG = ChronosConfig().to_dict()

# T5 shape of amazon/chronos-t5-tiny (8M parameters).
T5_TINY = dict(
    vocab_size=4096,
    d_model=256,
    d_kv=64,
    d_ff=1024,
    num_layers=4,
    num_decoder_layers=4,
    num_heads=4,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    initializer_factor=0.05,
)

# name: (n_series, context_length, prediction_length, num_samples, repeats multiplier)
SCENARIOS = {
    "headline": (32, 512, 64, 20, 1),
    "single": (1, 512, 64, 20, 3),  # fast, so more repeats for a stable median
    "large": (256, 512, 64, 20, 0.5),  # slow (minutes for the reference): fewer repeats
    "quick": (4, 128, 16, 5, 1),
}
TOP_K = 50


def scenario_label(name: str) -> str:
    n_series, context, horizon, samples, _ = SCENARIOS[name]
    return f"{name} ({n_series}×{context}→{horizon}, {samples} samples)"


# ---------------------------------------------------------------------------------------
# Inputs and checkpoint
# ---------------------------------------------------------------------------------------


def make_context(n_series: int, length: int, seed: int = 0):
    """Deterministic synthetic series: level + trend + two seasonalities + noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)[None, :]
    level = rng.uniform(10.0, 1000.0, (n_series, 1))
    trend = rng.normal(0.0, 0.002, (n_series, 1)) * level * t
    daily = 0.2 * level * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi, (n_series, 1)))
    weekly = 0.1 * level * np.sin(2 * np.pi * t / 168 + rng.uniform(0, 2 * np.pi, (n_series, 1)))
    noise = rng.normal(0.0, 0.05, (n_series, length)) * level
    return (level + trend + daily + weekly + noise).astype(np.float32)


def build_checkpoint(directory: Path, seed: int = 0, shape: dict | None = None) -> Path:
    """A random chronos-t5-tiny-shaped checkpoint, saved as transformers saves it.
    `shape` overrides T5 fields (e.g. `T5_PRESETS["small"]` for chronos-t5-small)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.T5Config(**{**T5_TINY, **(shape or {})})
    config.chronos_config = dict(CHRONOS_CONFIG)
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------
# One measurement (runs in a subprocess)
# ---------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class CpuMeter:
    """Average number of cores kept busy by OTHER processes (system-wide busy
    time from /proc/stat minus this process' own CPU time) over an interval: on
    a shared machine it flags measurements that competed for the CPU."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        wall = time.perf_counter()
        times = os.times()
        own = times.user + times.system
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            busy = None
        return wall, own, busy

    def background_cores(self) -> float | None:
        wall, own, busy = self._sample()
        wall0, own0, busy0 = self.start
        if busy is None or busy0 is None or wall <= wall0:
            return None
        return max(0.0, ((busy - busy0) - (own - own0)) / (wall - wall0))


def timed_call(predict, seed: int) -> dict:
    """Wall time, this process' CPU time (all threads) and the other processes'
    average load during one `predict(seed)`."""
    meter = CpuMeter()
    cpu = os.times()
    start = time.perf_counter()
    output = predict(seed)
    wall = time.perf_counter() - start
    after = os.times()
    return {
        "wall_s": wall,
        "cpu_s": (after.user + after.system) - (cpu.user + cpu.system),
        "background_cores": meter.background_cores(),
        "output": output,
    }


def background_load(seconds: float = 1.0) -> float | None:
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.background_cores()


def log(message: str) -> None:
    print(f"[predict_latency] {message}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> dict:
    import numpy as np

    n_series, context_length, horizon, num_samples, scale = SCENARIOS[args.scenario]
    repeats = max(1, int(args.repeats * scale))
    context = make_context(n_series, context_length)
    start = time.perf_counter()

    if args.only == "ref":
        import chronos
        import torch

        pipeline = chronos.ChronosPipeline.from_pretrained(args.checkpoint, dtype=torch.float32)
        batch = torch.tensor(context)
        # All series in one call, except for the large scenario (see the module docstring).
        chunk = args.reference_batch if args.scenario == "large" else n_series

        def predict(seed: int):
            torch.manual_seed(seed)
            out = [
                pipeline.predict(
                    batch[start : start + chunk],
                    prediction_length=horizon,
                    num_samples=num_samples,
                    top_k=TOP_K,
                )
                for start in range(0, n_series, chunk)
            ]
            return torch.cat(out).numpy()

        threads = {"torch_num_threads": torch.get_num_threads(), "series_per_call": chunk}
    else:
        active = os.environ.get("KERAS_BACKEND")
        if active != args.backend:
            raise RuntimeError(f"KERAS_BACKEND={active!r} but --backend={args.backend!r}")
        sys.path.insert(0, str(ROOT))
        from chronos_moe.pipeline import ChronosPipeline

        compute_dtype = None if args.compute_dtype == "float32" else args.compute_dtype
        pipeline = ChronosPipeline.from_pretrained(args.checkpoint, compute_dtype=compute_dtype)

        def predict(seed: int):
            return pipeline.predict(
                context,
                prediction_length=horizon,
                num_samples=num_samples,
                top_k=TOP_K,
                seed=seed,
            )

        if args.backend == "torch":
            import torch

            threads = {"torch_num_threads": torch.get_num_threads()}
        else:
            import jax

            threads = {"jax_devices": [str(d) for d in jax.devices()]}

    load_s = time.perf_counter() - start
    rss_after_load = peak_rss_mb()
    log(f"{args.only}/{args.backend}/{args.scenario}: loaded in {load_s:.2f}s")

    tag = f"{args.only}/{args.backend}/{args.scenario}"
    first = timed_call(predict, 0)
    log(f"{tag}: first call {first['wall_s']:.2f}s ({first['cpu_s']:.2f} CPU s)")
    out = first.pop("output")
    expected = (n_series, num_samples, horizon)
    if tuple(out.shape) != expected or not np.isfinite(out).all():
        raise RuntimeError(f"bad forecast: shape {tuple(out.shape)} (expected {expected})")

    for i in range(args.warmup):
        predict(1000 + i)
    calls = []
    for i in range(repeats):
        call = timed_call(predict, 1 + i)
        call.pop("output")
        calls.append(call)
        log(
            f"{tag}: repeat {i + 1}/{repeats} {call['wall_s']:.2f}s ({call['cpu_s']:.2f} CPU s, "
            f"other processes {call['background_cores'] or 0:.2f} cores)"
        )
    walls = [c["wall_s"] for c in calls]
    loads = [c["background_cores"] for c in calls if c["background_cores"] is not None]

    return {
        "implementation": "reference" if args.only == "ref" else "chronos-moe",
        "backend": args.backend,
        "compute_dtype": "float32" if args.only == "ref" else args.compute_dtype,
        "scenario": args.scenario,
        "n_series": n_series,
        "context_length": context_length,
        "prediction_length": horizon,
        "num_samples": num_samples,
        "top_k": TOP_K,
        "load_s": load_s,
        "first_call_s": first["wall_s"],
        "first_call_cpu_s": first["cpu_s"],
        "steady_median_s": statistics.median(walls),
        "steady_min_s": min(walls),
        "steady_cpu_median_s": statistics.median(c["cpu_s"] for c in calls),
        "steady_calls": calls,
        "background_load_first_call_cores": first["background_cores"],
        "background_load_steady_cores": statistics.mean(loads) if loads else None,
        "warmup_calls": args.warmup,
        "peak_rss_after_load_mb": rss_after_load,
        "peak_rss_mb": peak_rss_mb(),
        **threads,
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
            if k in os.environ
        },
    }


# ---------------------------------------------------------------------------------------
# Orchestration (top-level run)
# ---------------------------------------------------------------------------------------


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = None
    try:
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "chronos_moe"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        dirty = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": memory_gb,
        "gpu": "none (CPU only)",
        "os": platform.platform(),
        "python": platform.python_version(),
        "git_commit": commit,
        "chronos_moe_uncommitted_changes": dirty,
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
            if k in os.environ
        },
        "versions": {
            name: version(name)
            for name in (
                "torch",
                "jax",
                "jaxlib",
                "keras",
                "transformers",
                "chronos-forecasting",
                "numpy",
                "chronos-moe",
            )
        },
    }


def thread_env(threads: int, xla_flags: str = "") -> dict[str, str]:
    """Environment that limits torch's (OpenMP / MKL) thread pool and, for one
    thread, XLA's (XLA:CPU has no flag for N > 1 threads; it uses all cores)."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{xla_flags} {flags}".strip()
    return env


def wait_until_quiet(max_wait: float, threshold: float) -> float | None:
    """Waits (at most `max_wait` s) until other processes use < `threshold` cores."""
    deadline = time.perf_counter() + max_wait
    while True:
        load = background_load(2.0)
        if load is None or load < threshold or time.perf_counter() >= deadline:
            return load
        log(f"machine busy (other processes use {load:.2f} cores); waiting")


def run_script(
    script: str, arguments: list[str], backend: str, threads: int, timeout: float
) -> dict:
    """Runs `script arguments --result-file F` in a fresh process with
    `KERAS_BACKEND=backend` (and `thread_env(threads)` when `threads`), the
    repository on its path; returns the JSON it wrote to F."""
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        command = [sys.executable, script, *arguments, "--result-file", str(result_file)]
        env = {**os.environ, "KERAS_BACKEND": backend}
        if threads:
            env.update(thread_env(threads, env.get("XLA_FLAGS", "")))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        subprocess.run(command, env=env, check=True, timeout=timeout)
        return json.loads(result_file.read_text())


def run_child(
    args, only: str, backend: str, scenario: str, checkpoint: Path, dtype: str = "float32"
) -> dict:
    if args.max_wait > 0:
        wait_until_quiet(args.max_wait, args.quiet_threshold)
    arguments = [
        "--only", only,
        "--backend", backend,
        "--scenario", scenario,
        "--compute-dtype", dtype,
        "--checkpoint", str(checkpoint),
        "--repeats", str(args.repeats),
        "--warmup", str(args.warmup),
        "--reference-batch", str(args.reference_batch),
    ]  # fmt: skip
    return run_script(str(Path(__file__).resolve()), arguments, backend, args.threads, args.timeout)


def add_speedups(rows: list[dict]) -> None:
    reference = {r["scenario"]: r for r in rows if r["implementation"] == "reference"}
    for row in rows:
        ref = reference.get(row["scenario"])
        if ref is None:
            continue
        row["speedup_steady"] = ref["steady_median_s"] / row["steady_median_s"]
        row["speedup_first_call"] = ref["first_call_s"] / row["first_call_s"]
        row["speedup_steady_cpu"] = ref["steady_cpu_median_s"] / row["steady_cpu_median_s"]


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| implementation | backend | dtype | scenario | first call (s) | steady (s) "
        "| speed-up vs reference | peak RSS (MB) | steady CPU (s) | speed-up (CPU) "
        "| other load (cores) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = r.get("speedup_steady")
        label = scenario_label(r["scenario"])
        if r.get("series_per_call", r["n_series"]) < r["n_series"]:
            label += f", {r['series_per_call']} series per call"
        lines.append(
            f"| {r['implementation']} | {r['backend']} | {r.get('compute_dtype', 'float32')} "
            f"| {label} "
            f"| {r['first_call_s']:.2f} | {r['steady_median_s']:.2f} "
            f"| {ratio(speedup)} | {r['peak_rss_mb']:.0f} | {r['steady_cpu_median_s']:.2f} "
            f"| {ratio(r.get('speedup_steady_cpu'))} "
            f"| {fmt(r.get('background_load_steady_cores'))} |"
        )
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> None:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in ("torch", "jax"):
            raise SystemExit(f"--backends: unknown backend {backend!r} (torch, jax)")
    if args.quick:
        scenarios = ["quick"]
        args.repeats = min(args.repeats, 1)
    else:
        scenarios = ["headline", "single"] + ([] if args.no_large else ["large"])
    if args.scenarios:
        scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"--scenarios: unknown {sorted(unknown)} (known: {list(SCENARIOS)})")

    info = machine_info()
    log(f"machine: {info['cpu']}, {info['usable_cores']} cores, {info['memory_gb']} GB")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chronos-t5-tiny-random-") as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else build_checkpoint(Path(tmp))
        log(f"checkpoint: {checkpoint}")
        dtypes = [d.strip() for d in args.compute_dtypes.split(",") if d.strip()]
        runs = ([] if args.skip_reference else [("ref", "torch", "float32")]) + [
            ("ours", b, d) for b in backends for d in dtypes
        ]
        rows = [
            run_child(args, only, backend, scenario, checkpoint, dtype)
            for only, backend, dtype in runs
            for scenario in scenarios
        ]
    add_speedups(rows)
    table = markdown_table(rows)
    print()
    print(table)
    print()
    print(
        f"Machine: {info['cpu']}, {info['usable_cores']} cores, {info['memory_gb']} GB RAM, "
        f"no GPU. torch {info['versions']['torch']}, jax {info['versions']['jax']}, "
        f"keras {info['versions']['keras']}, transformers {info['versions']['transformers']}, "
        f"chronos-forecasting {info['versions']['chronos-forecasting']}. "
        f"Total wall time {time.perf_counter() - started:.0f}s."
    )

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = " ".join(
        [f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')}", "python", *sys.argv]
    )
    for backend in backends:
        selected = [
            r for r in rows if r["implementation"] == "reference" or r["backend"] == backend
        ]
        suffix = "_quick" if args.quick else ""
        path = RESULTS_DIR / f"predict_latency_{backend}{suffix}.json"
        payload = {
            "command": command,
            "machine": info,
            "model": {"t5_config": T5_TINY, "chronos_config": CHRONOS_CONFIG},
            "settings": {
                "repeats": args.repeats,
                "warmup": args.warmup,
                "threads": args.threads or "default",
                "scenarios": scenarios,
                "max_wait_s": args.max_wait,
                "quiet_threshold_cores": args.quiet_threshold,
            },
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
        "--backends",
        default="torch,jax",
        help="chronos-moe backends to measure, comma-separated (default: torch,jax)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed steady-state calls per run (x3 for the 1-series scenario; default: 3)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed calls after the first call, before the repeats (default: 0)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: one small scenario, 1 repeat"
    )
    parser.add_argument(
        "--no-large",
        action="store_true",
        help="skip the 256-series scenario (slow: the reference takes minutes per call)",
    )
    parser.add_argument(
        "--reference-batch",
        type=int,
        default=32,
        help="series per reference call in the 256-series scenario (default: 32)",
    )
    parser.add_argument(
        "--scenarios", help=f"comma-separated, overrides the selection; from {list(SCENARIOS)}"
    )
    parser.add_argument("--skip-reference", action="store_true", help="only measure chronos-moe")
    parser.add_argument(
        "--checkpoint", help="use this checkpoint directory instead of building a random tiny one"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds per subprocess (default: 3600)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch and XLA in every measurement (0: the libraries' defaults, "
        "= all cores). On a machine shared with other jobs, 1 avoids OpenMP's "
        "oversubscription slow-down.",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=0,
        help="before each measurement, wait up to this many seconds for other processes to "
        "go quiet (default: 0, don't wait)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.2,
        help="'quiet' = other processes use fewer cores than this (default: 0.2)",
    )
    # Internal: one measurement in this process.
    parser.add_argument("--only", choices=["ref", "ours"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--backend", choices=["torch", "jax"], default="torch", help=argparse.SUPPRESS
    )
    parser.add_argument("--scenario", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--compute-dtype", choices=["float32", "bfloat16"], default="float32",
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--compute-dtypes",
        default="float32",
        help="chronos-moe compute dtypes to measure, comma-separated: float32,bfloat16 "
        "(ChronosPipeline's compute_dtype; default: float32)",
    )
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.only:
        if not (args.scenario and args.checkpoint and args.result_file):
            parser.error("--only needs --scenario, --checkpoint and --result-file")
        Path(args.result_file).write_text(json.dumps(measure(args)))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
