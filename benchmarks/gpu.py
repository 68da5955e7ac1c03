"""GPU: bfloat16 training throughput, model FLOP utilisation and forecast latency.

A short, prepared run for a machine with one NVIDIA GPU (the torch CUDA path
and the JAX GPU path are the library's ordinary code). One subprocess per
backend (`KERAS_BACKEND` is fixed per process), torch then JAX; each measures:

* **Training**, for the chronos-t5-small and chronos-t5-base shapes
  (vocabulary 4096), each as the dense `ChronosT5`, the series-level MoE
  (`build_moe_chronos(E=4, k=2)`) and the token-level MoE
  (`build_moe_chronos(E=8, k=2, level="token")`: experts in every block, as
  wide as `d_ff`, plus the shared expert): `train_on_batch` under Keras'
  `mixed_bfloat16` policy (bfloat16 compute, float32 weights and AdamW
  moments; `compile(AdamW(1e-3, global_clipnorm=1.0))`, `jit_compile=True`
  on JAX) on batches of 32 series, context 512 + EOS, prediction 64 + EOS,
  dropout 0.1 — the training setting of `train_throughput.py`, whose model
  builder this script reuses. `--warmup` untimed steps (compilation on JAX),
  then the median of `--steps` timed ones (each returns its loss to the host,
  so the device has finished). Reported: step time, tokens/s (encoder +
  decoder positions: 32 × (513 + 65) = 18,496 per step), peak device memory,
  and MFU.
* **Forecast latency**, T5 and Bolt of the same size: `ChronosPipeline`
  (`compute_dtype="bfloat16"`, 20 samples, top-k 50, 64 steps) and
  `ChronosBoltPipeline` (float32, 9 quantiles, 64 steps) on 1 and 32 series
  of 512 steps: the first call (compilation on JAX) and the median of
  `--repeats` further calls.

**MFU** (model FLOP utilisation) = model FLOPs per step ÷ step time ÷ the
device's peak dense bfloat16 tensor-core rate. The model FLOPs are counted
from the shapes (`train_throughput.train_step_flops`) as 3 × the forward
pass's matmul FLOPs (the backward pass costs twice the forward), i.e.

    6 · N_active · tokens  +  6 · 2 · Σ_attention (q_len · k_len · heads · d_kv)

with N_active the matmul weights a token passes through: per encoder layer
q, k, v, o and the feed-forward; per decoder layer self-attention, cross-
attention (its k, v over the encoder positions) and the feed-forward; the
vocabulary head over the decoder positions (embedding lookups count nothing).
The series-level MoE counts, instead of the one head, its k = 2 chosen
experts (a residual feed-forward block and a vocabulary head each); the
token-level MoE adds, per token and block, the k = 2 routed experts
(`2 · d_model · d_ff` weights each) and the router (`d_model · E`); the shared
expert is the dense feed-forward, counted already. The peak rate comes from
`PEAK_BF16_TFLOPS` by device name (NVIDIA's datasheet figures, without
sparsity) or from `--peak-tflops`; without either, MFU is not reported.

Usage (from the repository root):

    python benchmarks/gpu.py                      # on a GPU machine: everything, ~8 min
    python benchmarks/gpu.py --dry-run            # any machine: tiny shapes, 2 steps, no MFU
    python benchmarks/gpu.py --backends torch --sizes small --peak-tflops 989

Writes `gpu.json` and `gpu.md` (`gpu_dry_run.*` with `--dry-run`) to
`--output-dir` (default `benchmarks/results/`) and prints the tables. Each
backend's results are also written after every case
(`gpu_<backend>_partial.json`), so a run cut short by `--timeout` keeps what
it measured. Without a GPU the run stops with a message unless `--dry-run`.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bolt_latency import BOLT_CONTEXT, BOLT_HORIZON, BOLT_PATCH  # noqa: E402
from moe_train_step import FULL_SHAPE, QUICK_SHAPE  # noqa: E402
from predict_latency import TOP_K, machine_info, make_context, run_script, timed_call  # noqa: E402
from train_throughput import (  # noqa: E402
    MOE_TOP_K,
    TOKEN_EXPERTS,
    TOKEN_TOP_K,
    chronos_moe_step_function,
    train_step_flops,
)

from chronos_moe.config import T5_PRESETS  # noqa: E402  (no Keras import: the backend is free)

# Dense bfloat16 tensor-core peak (TFLOP/s, no sparsity), NVIDIA's datasheets;
# matched against the device name, longest key first ("A100" before "A10").
PEAK_BF16_TFLOPS = {
    "H200": 989.0,  # SXM; also GH200
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
}
MODELS = {"dense": "dense", "moe": "series E=4 k=2", "token": "token E=8 k=2"}
SIZES = ("small", "base")
FORECAST_CASES = [(1, 512), (32, 512)]  # (series, context)
T5_SAMPLES = 20
# --dry-run: the smoke-test shapes of the other training benchmarks, 2 steps.
DRY_SHAPE = QUICK_SHAPE
DRY_FORECAST = dict(cases=[(1, 32), (4, 32)], horizon=8, samples=4)


def log(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def training_shape(size: str, dry_run: bool) -> dict:
    """The benchmark's training shape: a chronos-t5 size on `FULL_SHAPE`'s
    batch, context, prediction and vocabulary."""
    return dict(DRY_SHAPE) if dry_run else {**FULL_SHAPE, **T5_PRESETS[size]}


def model_flops(shape: dict, model: str) -> float:
    """Model FLOPs of one training step (see the module docstring)."""
    if model != "token":
        return train_step_flops(shape, MOE_TOP_K if model == "moe" else 0)
    d, width = shape["d_model"], shape["d_ff"]
    tokens = shape["batch"] * (shape["context"] + 1 + shape["prediction"] + 1)
    per_token = TOKEN_TOP_K * 2 * 2 * d * width + 2 * d * TOKEN_EXPERTS  # experts + router
    return train_step_flops(shape) + 3.0 * shape["num_layers"] * tokens * per_token


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in device:
            return PEAK_BF16_TFLOPS[key]
    return None


# ---------------------------------------------------------------------------------
# One backend (runs in a subprocess)
# ---------------------------------------------------------------------------------


class Device:
    """The accelerator this backend computes on: its name, and its peak memory
    (`None` on a CPU)."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "torch":
            import torch

            self.gpu = torch.cuda.is_available()
            self.name = torch.cuda.get_device_name(0) if self.gpu else "cpu"
        else:
            import jax

            device = jax.devices()[0]
            self.gpu = device.platform == "gpu"
            self.name = device.device_kind if self.gpu else "cpu"

    def reset_peak(self) -> None:
        if self.gpu and self.backend == "torch":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        """Peak device memory in use: since the last `reset_peak` on torch;
        since the process started on JAX (XLA keeps no resettable peak)."""
        if not self.gpu:
            return None
        if self.backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 1e9
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in stats else None


def measure_training(shape: dict, model: str, args, device: Device) -> dict:
    import keras

    device.reset_peak()
    step, parameters = chronos_moe_step_function(shape, model, "bfloat16")
    start = time.perf_counter()
    losses = [step() for _ in range(args.warmup)]
    warmup_s = time.perf_counter() - start
    walls = []
    for _ in range(args.steps):
        wall = time.perf_counter()
        losses.append(step())
        walls.append(time.perf_counter() - wall)
    step_s = statistics.median(walls)
    tokens = shape["batch"] * (shape["context"] + 1 + shape["prediction"] + 1)
    flops = model_flops(shape, model)
    peak = None if args.dry_run else peak_tflops(device.name, args.peak_tflops)
    row = {
        "model": MODELS[model],
        "parameters": parameters,
        "warmup_s": warmup_s,
        "step_s": step_s,
        "step_s_all": walls,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step_s,
        "model_tflop_per_step": flops / 1e12,
        "achieved_tflop_per_s": flops / step_s / 1e12,
        "peak_bf16_tflop_per_s": peak,
        "mfu": flops / step_s / 1e12 / peak if peak else None,
        "peak_memory_gb": device.peak_gb(),
        "losses": losses,
    }
    del step
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    gc.collect()
    return row


def forecast_pipelines(size: str, dry_run: bool):
    """chronos-moe's T5 (bfloat16 compute) and Bolt pipelines, random weights,
    the shapes of amazon/chronos-t5-<size> and amazon/chronos-bolt-<size>
    (`DRY_SHAPE` and `DRY_FORECAST` with `dry_run`)."""
    import keras

    from chronos_moe import ChronosBolt, ChronosBoltPipeline, ChronosPipeline, ChronosT5

    keras.utils.set_random_seed(0)
    keys = ("d_model", "d_kv", "d_ff", "num_layers", "num_heads")
    shape = {k: DRY_SHAPE[k] for k in keys} if dry_run else T5_PRESETS[size]
    context, horizon, patch = BOLT_CONTEXT, BOLT_HORIZON, BOLT_PATCH
    t5_config = {}  # ChronosConfig's defaults: the released models' block
    if dry_run:
        context, horizon, patch = DRY_FORECAST["cases"][0][1], DRY_FORECAST["horizon"], 8
        t5_config = {
            "n_tokens": DRY_SHAPE["vocab_size"],
            "context_length": context,
            "prediction_length": horizon,
        }
    bolt_config = {
        "context_length": context,
        "prediction_length": horizon,
        "input_patch_size": patch,
        "input_patch_stride": patch,
        "use_reg_token": True,
    }
    vocab = DRY_SHAPE["vocab_size"] if dry_run else 4096
    t5 = ChronosT5(**shape, vocab_size=vocab, initializer_factor=0.05, chronos_config=t5_config)
    bolt = ChronosBolt(**shape, initializer_factor=0.05, chronos_config=bolt_config)
    return ChronosPipeline(t5, compute_dtype="bfloat16"), ChronosBoltPipeline(bolt)


def measure_forecasts(size: str, args) -> list[dict]:
    t5, bolt = forecast_pipelines(size, args.dry_run)
    horizon = DRY_FORECAST["horizon"] if args.dry_run else BOLT_HORIZON
    samples = DRY_FORECAST["samples"] if args.dry_run else T5_SAMPLES
    rows = []
    for n_series, length in DRY_FORECAST["cases"] if args.dry_run else FORECAST_CASES:
        context = make_context(n_series, length)
        calls = {
            f"T5 (bfloat16, {samples} samples)": lambda seed, context=context: t5.predict(
                context, horizon, num_samples=samples, top_k=TOP_K, seed=seed
            ),
            "Bolt (float32)": lambda seed, context=context: bolt.predict(context, horizon),
        }
        for name, predict in calls.items():
            first = timed_call(predict, 0)["wall_s"]
            walls = [timed_call(predict, 1 + i)["wall_s"] for i in range(args.repeats)]
            rows.append(
                {
                    "model": name,
                    "series": n_series,
                    "context": length,
                    "first_call_s": first,
                    "steady_s": statistics.median(walls),
                    "steady_s_all": walls,
                }
            )
            log(f"{size} {name} {n_series}×{length}: {rows[-1]['steady_s'] * 1000:.0f} ms")
    return rows


def measure(args) -> dict:
    import keras

    backend = keras.config.backend()
    device = Device(backend)
    if not device.gpu and not args.dry_run:
        raise SystemExit(
            f"{backend} finds no GPU (device: {device.name}); run with --dry-run to check the "
            "script on a CPU"
        )
    result = {
        "backend": backend,
        "device": device.name,
        "dry_run": args.dry_run,
        "training": [],
        "forecast": [],
    }
    partial = args.output_dir / f"gpu_{backend}_partial.json"
    sizes = ["tiny test shape"] if args.dry_run else args.sizes
    for size in sizes:
        shape = training_shape(size, args.dry_run)
        for model in args.models:
            try:
                row = measure_training(shape, model, args, device)
            except Exception as error:  # an out-of-memory case must not end the run
                row = {"model": MODELS[model], "error": f"{type(error).__name__}: {error}"[:500]}
            result["training"].append({"size": size, **row})
            log(f"{backend} {size} {MODELS[model]}: {row.get('step_s', row.get('error'))}")
            partial.write_text(json.dumps(result, indent=2))
        if args.forecast:
            for row in measure_forecasts(size, args):
                result["forecast"].append({"size": size, **row})
            partial.write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------


def number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(results: list[dict]) -> str:
    lines = [
        "| backend | device | size | model | params (M) | step (s) | tokens/s "
        "| TFLOP/step | TFLOP/s | MFU | peak memory (GB) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for r in result["training"]:
            head = f"| {result['backend']} | {result['device']} | {r['size']} | {r['model']} "
            if "error" in r:
                lines.append(head + f"| failed: {r['error'][:80]} | | | | | | |")
                continue
            lines.append(
                head + f"| {r['parameters'] / 1e6:.1f} | {r['step_s']:.3f} "
                f"| {r['tokens_per_s']:,.0f} | {r['model_tflop_per_step']:.3g} "
                f"| {r['achieved_tflop_per_s']:.3g} "
                f"| {'—' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + '%'} "
                f"| {number(r['peak_memory_gb'], '.1f')} |"
            )
    lines += [
        "",
        "| backend | size | model | series × context | first call (ms) | steady (ms) |",
        "|---|---|---|---|---:|---:|",
    ]
    for result in results:
        for r in result["forecast"]:
            lines.append(
                f"| {result['backend']} | {r['size']} | {r['model']} | {r['series']} × "
                f"{r['context']} | {1000 * r['first_call_s']:.0f} | {1000 * r['steady_s']:.0f} |"
            )
    return "\n".join(lines)


def run_backend(args, backend: str) -> dict:
    arguments = [
        "--child",
        "--warmup", str(args.warmup),
        "--steps", str(args.steps),
        "--repeats", str(args.repeats),
        "--sizes", ",".join(args.sizes),
        "--models", ",".join(args.models),
        "--output-dir", str(args.output_dir),
    ] + (["--dry-run"] if args.dry_run else []) + (
        ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
    ) + ([] if args.forecast else ["--no-forecast"])  # fmt: skip
    try:
        return run_script(str(Path(__file__).resolve()), arguments, backend, 0, args.timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        partial = args.output_dir / f"gpu_{backend}_partial.json"
        log(f"{backend}: {type(error).__name__}; keeping what it measured")
        if partial.exists():
            return {**json.loads(partial.read_text()), "incomplete": str(error)}
        return {"backend": backend, "device": "?", "training": [], "forecast": [],
                "incomplete": str(error)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,jax", help="default: torch,jax")
    parser.add_argument("--sizes", default=",".join(SIZES), help="chronos-t5 sizes: small,base")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="dense,moe,token (default: all three)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5)")
    parser.add_argument("--repeats", type=int, default=None, help="timed forecasts (default 3)")
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s (default: by name)"
    )
    parser.add_argument("--no-forecast", dest="forecast", action="store_false")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes, 2 steps, no MFU")
    parser.add_argument(
        "--output-dir", type=Path, default=ROOT / "benchmarks" / "results", help="JSON, Markdown"
    )
    parser.add_argument("--timeout", type=float, default=270, help="seconds per backend")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.warmup = args.warmup or (1 if args.dry_run else 2)
    args.steps = args.steps or (1 if args.dry_run else 5)
    args.repeats = args.repeats or (1 if args.dry_run else 3)
    args.sizes = args.sizes.split(",")
    args.models = args.models.split(",")
    for option, values, known in (
        ("--sizes", args.sizes, SIZES),
        ("--models", args.models, tuple(MODELS)),
        ("--backends", args.backends.split(","), ("torch", "jax")),
    ):
        if not set(values) <= set(known):
            parser.error(f"{option} must be a subset of {','.join(known)}; got {values}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        args.result_file.write_text(json.dumps(measure(args), indent=2))
        return

    started = time.perf_counter()
    results = []
    for backend in args.backends.split(","):
        log(f"measuring {backend}")
        results.append(run_backend(args, backend))
    table = markdown(results)
    name = "gpu_dry_run" if args.dry_run else "gpu"
    machine = machine_info()
    machine["gpu"] = sorted({result["device"] for result in results})  # what the backends found
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine,
        "settings": {
            key: getattr(args, key)
            for key in ("sizes", "models", "warmup", "steps", "repeats", "peak_tflops", "dry_run")
        },
        "wall_s": time.perf_counter() - started,
        "results": results,
    }
    (args.output_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (args.output_dir / f"{name}.md").write_text(table + "\n")
    for backend in args.backends.split(","):  # complete: the final JSON holds it all
        (args.output_dir / f"gpu_{backend}_partial.json").unlink(missing_ok=True)
    print(table)
    print(f"\nwrote {args.output_dir / name}.json and .md ({payload['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
