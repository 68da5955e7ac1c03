"""Training throughput: the reference (transformers T5 + torch AdamW) vs chronos-moe.

Every case trains the chronos-t5-tiny shape (d_model 256, d_ff 1024, 4+4
layers, 4 heads, vocab 4096, dropout 0.1) on batches of 32 series, context
512 (+EOS), prediction 64 (+EOS), and runs in a fresh process of its own so
that its peak RSS is its own:

* reference: `transformers.T5ForConditionalGeneration` with `torch.optim.AdamW`
  (lr 1e-3, gradient clipping at 1.0), as the reference training script's
  Trainer does on a CPU; float32, and — reported separately — the same under
  `torch.autocast(bfloat16)`;
* chronos-moe: dense `ChronosT5` and `build_moe_chronos(E=4, k=2)`, trained
  with `train_on_batch` after `compile(AdamW(1e-3, global_clipnorm=1.0))`
  (`jit_compile=True` on JAX), on torch and on JAX, in float32 and under the
  `mixed_bfloat16` policy.

Reported per case: the median step time over `--steps` timed steps (after
`--warmup` untimed ones, which include JAX compilation), samples/s, the ratio
to the float32 reference's samples/s, peak RSS, and the achieved FLOP/s
(an analytic count of the step's matmul FLOPs ÷ step time) as a share of
this machine's float32 and bfloat16 matmul rates, measured in the same run.

Usage (from the repository root):

    python benchmarks/train_throughput.py                  # every case (~10 min)
    python benchmarks/train_throughput.py --quick          # small shapes, smoke run
    python benchmarks/train_throughput.py --cases reference-float32,torch-dense-bfloat16

Prints a Markdown table and writes `benchmarks/results/train_throughput.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
LEARNING_RATE = 1e-3
MAX_GRAD_NORM = 1.0
MOE_EXPERTS, MOE_TOP_K = 4, 2
TOKEN_EXPERTS, TOKEN_TOP_K = 8, 2


def case_names() -> list[str]:
    names = ["reference-float32", "reference-bfloat16"]
    for backend in ("torch", "jax"):
        for model in ("dense", "moe"):
            for precision in ("float32", "bfloat16"):
                names.append(f"{backend}-{model}-{precision}")
    return names


def log(message: str) -> None:
    print(f"[train_throughput] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# FLOP count
# ---------------------------------------------------------------------------------


def train_step_flops(shape: dict, experts_per_series: int = 0) -> float:
    """Matmul FLOPs of one training step (forward × 3: the backward pass costs
    twice the forward), T5 encoder-decoder plus the output head(s).

    `experts_per_series` > 0 adds, per chosen expert, one residual FFN block and
    one vocabulary head over the decoder positions (the MoE head)."""
    batch, d, ff, vocab = shape["batch"], shape["d_model"], shape["d_ff"], shape["vocab_size"]
    inner = shape["num_heads"] * shape["d_kv"]
    layers = shape["num_layers"]
    enc, dec = shape["context"] + 1, shape["prediction"] + 1
    encoder = layers * (
        4 * 2 * enc * d * inner  # q, k, v, o
        + 2 * 2 * enc * enc * inner  # scores and weighted values
        + 2 * 2 * enc * d * ff  # feed-forward in and out
    )
    decoder = layers * (
        4 * 2 * dec * d * inner
        + 2 * 2 * dec * dec * inner
        + 2 * 2 * dec * d * inner  # cross-attention q, o
        + 2 * 2 * enc * d * inner  # cross-attention k, v over the encoder output
        + 2 * 2 * dec * enc * inner
        + 2 * 2 * dec * d * ff
    )
    head = 2 * dec * d * vocab
    experts = experts_per_series * (2 * 2 * dec * d * ff + head)
    return 3.0 * batch * (encoder + decoder + (head if not experts_per_series else experts))


def matmul_rates(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of a square torch matmul in float32 and bfloat16."""
    import torch

    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        rates[name] = 2 * size**3 / statistics.median(times) / 1e9
    return rates


# ---------------------------------------------------------------------------------
# One case (runs in its own subprocess)
# ---------------------------------------------------------------------------------


def reference_step_function(shape: dict, precision: str):
    """A closure running one reference training step on the batch."""
    import contextlib

    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=shape["vocab_size"],
        d_model=shape["d_model"],
        d_kv=shape["d_kv"],
        d_ff=shape["d_ff"],
        num_layers=shape["num_layers"],
        num_heads=shape["num_heads"],
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        initializer_factor=0.05,
    )
    model = transformers.T5ForConditionalGeneration(config).to(torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    batch = {key: torch.as_tensor(value) for key, value in make_batch(shape).items()}
    batch["attention_mask"] = batch["attention_mask"].long()
    batch["labels"] = batch["labels"].long()
    batch["input_ids"] = batch["input_ids"].long()
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bfloat16"
        else contextlib.nullcontext()
    )

    def step() -> float:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return step, sum(p.numel() for p in model.parameters())


def chronos_moe_step_function(shape: dict, model_kind: str, precision: str):
    import keras

    from chronos_moe import ChronosT5, build_moe_chronos

    if precision == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = ChronosT5(
        **{k: shape[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads")},
        num_layers=shape["num_layers"],
        initializer_factor=0.05,
        chronos_config={
            "n_tokens": shape["vocab_size"],
            "context_length": shape["context"],
            "prediction_length": shape["prediction"],
        },
    )
    if model_kind == "moe":
        model = build_moe_chronos(model, num_experts=MOE_EXPERTS, top_k=MOE_TOP_K)
    elif model_kind == "token":  # `benchmarks/gpu.py`: experts in every block, width d_ff
        model = build_moe_chronos(
            model, num_experts=TOKEN_EXPERTS, top_k=TOKEN_TOP_K, level="token"
        )
    model.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, global_clipnorm=MAX_GRAD_NORM),
        jit_compile=keras.config.backend() == "jax",
    )
    batch = make_batch(shape)

    def step() -> float:
        logs = model.train_on_batch(batch, return_dict=True)
        return float(logs["loss"])

    return step, int(model.count_params())


def measure_case(name: str, shape: dict, warmup: int, steps: int) -> dict:
    implementation, *rest = name.split("-")
    if implementation == "reference":
        (precision,) = rest
        step, parameters = reference_step_function(shape, precision)
        model_kind, backend = "dense", "torch"
    else:
        model_kind, precision = rest
        backend = implementation
        step, parameters = chronos_moe_step_function(shape, model_kind, precision)
    start = time.perf_counter()
    losses = [step() for _ in range(warmup)]
    warmup_s = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(steps):
        wall, cpu = time.perf_counter(), time.process_time()
        losses.append(step())
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    step_s = statistics.median(walls)
    flops = train_step_flops(shape, MOE_TOP_K if model_kind == "moe" else 0)
    return {
        "case": name,
        "implementation": "reference" if implementation == "reference" else "chronos-moe",
        "backend": backend,
        "model": model_kind,
        "precision": precision,
        "parameters": parameters,
        "warmup_s": warmup_s,
        "step_s": step_s,
        "step_s_all": walls,
        "cpu_s": statistics.median(cpus),
        "samples_per_s": shape["batch"] / step_s,
        "step_gflop": flops / 1e9,
        "achieved_gflop_per_s": flops / step_s / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": losses,
    }


# ---------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------


def run_case(name: str, args: argparse.Namespace) -> dict:
    backend = "torch" if name.startswith("reference") else name.split("-")[0]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable, str(Path(__file__).resolve()), "--child", name,
            "--warmup", str(args.warmup), "--steps", str(args.steps),
            "--result-file", str(result_file),
        ] + (["--quick"] if args.quick else [])  # fmt: skip
        env = {**os.environ, "KERAS_BACKEND": backend}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        subprocess.run(command, env=env, check=True, timeout=args.timeout)
        return json.loads(result_file.read_text())


def markdown_table(rows: list[dict], rates: dict[str, float]) -> str:
    baseline = next((r["samples_per_s"] for r in rows if r["case"] == "reference-float32"), None)
    lines = [
        "| implementation | backend | model | precision | step (s) | samples/s "
        "| × reference fp32 | peak RSS (MB) | GFLOP/s | % fp32 peak | % bf16 peak |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = f"{r['samples_per_s'] / baseline:.2f}×" if baseline else "—"
        lines.append(
            f"| {r['implementation']} | {r['backend']} | {r['model']} | {r['precision']} "
            f"| {r['step_s']:.2f} | {r['samples_per_s']:.2f} | {speedup} "
            f"| {r['peak_rss_mb']:.0f} | {r['achieved_gflop_per_s']:.0f} "
            f"| {100 * r['achieved_gflop_per_s'] / rates['float32']:.0f}% "
            f"| {100 * r['achieved_gflop_per_s'] / rates['bfloat16']:.0f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=",".join(case_names()),
        help=f"comma-separated subset of {','.join(case_names())} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE

    if args.child:
        result = measure_case(args.child, shape, args.warmup, args.steps)
        args.result_file.write_text(json.dumps(result, indent=2))
        return

    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(case_names()))
    if unknown:
        parser.error(f"unknown --cases {unknown}; choose from {case_names()}")
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be >= 1; got {args.warmup}, {args.steps}")
    rates = matmul_rates()
    log(f"matmul rate: float32 {rates['float32']:.0f}, bfloat16 {rates['bfloat16']:.0f} GFLOP/s")
    rows = []
    for name in cases:
        log(f"measuring {name}")
        rows.append(run_case(name, args))
        log(f"{name}: {rows[-1]['step_s']:.2f} s/step, {rows[-1]['peak_rss_mb']:.0f} MB")
    result = {
        "command": " ".join(["python", *sys.argv]),
        "shape": shape,
        "quick": args.quick,
        "warmup": args.warmup,
        "steps": args.steps,
        "matmul_gflop_per_s": rates,
        "machine": machine_info(),
        "rows": rows,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"train_throughput{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    log(f"wrote {path.relative_to(ROOT)}")
    print(markdown_table(rows, rates))


if __name__ == "__main__":
    main()
