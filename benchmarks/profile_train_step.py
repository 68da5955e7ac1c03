"""Where a training step's time goes: the reference (torch) against chronos-moe on JAX.

Profiles one float32 training step of the `train_throughput.py` cases
(chronos-t5-tiny shape, batch 32, context 512, prediction 64, dropout 0.1,
AdamW) after the untimed warm-up steps, each case in a fresh process, and
sorts the time of every operation into one of five kinds:

* **matmul** — products: torch's `mm`/`bmm`/`addmm`, XLA's `dot` and the
  fusions that contain one;
* **random bits** — dropout's draws: torch's `bernoulli_`/`uniform_`/`rand`,
  XLA fusions that compute random words (unsigned-integer shifts and XORs,
  `rng-bit-generator`);
* **reduction** — softmax sums and maxima, layer-norm means, gradient sums:
  torch reductions, XLA fusions whose root work is a `reduce`;
* **optimizer** — AdamW and gradient clipping: torch's `_foreach_*` and
  `clip_grad_norm_` ops; on JAX they are fused into the step and counted in
  the kinds above;
* **elementwise and copies** — everything else.

Torch is profiled with `torch.profiler` (self CPU time per operator), JAX with
`jax.profiler` (a Perfetto trace: one event per XLA thunk), whose thunk names
are looked up in the compiled step's optimised HLO (`XLA_FLAGS=--xla_dump_to`)
to read what each fusion computes. Times are summed over threads, so a kind's
total can exceed the step's wall time. Matmul GFLOP/s is the step's analytic
matmul FLOP count (`train_throughput.train_step_flops`) ÷ the matmul time.

Usage (from the repository root; ~3 minutes):

    python benchmarks/profile_train_step.py
    python benchmarks/profile_train_step.py --quick     # small shapes, smoke run
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moe_train_step import FULL_SHAPE, QUICK_SHAPE  # noqa: E402
from train_throughput import (  # noqa: E402
    chronos_moe_step_function,
    reference_step_function,
    train_step_flops,
)

KINDS = ("matmul", "random bits", "reduction", "optimizer", "elementwise and copies")
TORCH_KINDS = {
    "matmul": re.compile(r"^aten::(mm|bmm|addmm|baddbmm|matmul|linear)$"),
    "random bits": re.compile(r"^aten::(bernoulli_|uniform_|rand|rand_like|native_dropout)$"),
    "reduction": re.compile(r"^aten::(sum|mean|amax|max|_softmax|_log_softmax|norm|"
                            r"_softmax_backward_data|_log_softmax_backward_data|"
                            r"nll_loss_forward|nll_loss2d_forward|linalg_vector_norm)$"),
    "optimizer": re.compile(r"^aten::_foreach_|^Optimizer\.|clip_grad"),
}  # fmt: skip


def torch_kind(name: str) -> str:
    for kind, pattern in TORCH_KINDS.items():
        if pattern.search(name):
            return kind
    return "elementwise and copies"


def profile_reference(shape: dict, warmup: int) -> dict:
    import torch

    step, _ = reference_step_function(shape, "float32")
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    wall = time.perf_counter() - start
    seconds: dict[str, float] = collections.Counter()
    for event in profiler.key_averages():
        seconds[torch_kind(event.key)] += event.self_cpu_time_total / 1e6
    return {"wall_s": wall, "seconds": dict(seconds)}


def fused_computations(hlo_text: str) -> dict[str, str]:
    """Instruction name -> the text of what it computes (its fused computation
    for a fusion, its own line otherwise), from an optimised HLO module."""
    bodies, current, lines = {}, None, []
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current, lines = header.group(1), []
        elif line.strip() == "}" and current:
            bodies[current] = "\n".join(lines)
            current = None
        elif current:
            lines.append(line)
    instructions = {}
    for body in bodies.values():
        for line in body.splitlines():
            match = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", line)
            if not match:
                continue
            called = re.search(r"calls=%?([\w.\-]+)", line)
            instructions[match.group(1)] = bodies.get(called.group(1), line) if called else line
    return instructions


def hlo_kind(text: str) -> str | None:
    """The kind of an HLO instruction's work; `None` for control flow (a
    `while` loop's time is its body's, whose thunks are traced themselves)."""
    if re.search(r"[\]\)}] (while|conditional|call)\(", text):
        return None
    if re.search(r"\b(dot|convolution)\(", text) or "__onednn$matmul" in text:
        return "matmul"
    if "rng-bit-generator" in text or (
        re.search(r"u32\[[^\]]*\]\S* (shift-right-logical|xor)\(", text)
    ):
        return "random bits"
    if re.search(r"\breduce(-window)?\(", text):
        return "reduction"
    return "elementwise and copies"


def profile_jax(shape: dict, warmup: int, folder: Path) -> dict:
    import jax

    dump = folder / "hlo"
    step, _ = chronos_moe_step_function(shape, "dense", "float32")
    for _ in range(warmup):
        step()
    trace = folder / "trace"
    start = time.perf_counter()
    jax.profiler.start_trace(str(trace), create_perfetto_trace=True)
    step()
    jax.profiler.stop_trace()
    wall = time.perf_counter() - start
    modules = [
        path
        for path in glob.glob(str(dump / "*after_optimizations.txt"))
        if "train" in Path(path).name
    ]
    instructions: dict[str, str] = {}
    for path in modules:
        instructions.update(fused_computations(Path(path).read_text()))
    (perfetto,) = glob.glob(str(trace / "**" / "perfetto_trace.json.gz"), recursive=True)
    events = json.load(gzip.open(perfetto))
    events = events["traceEvents"] if isinstance(events, dict) else events
    seconds: dict[str, float] = collections.Counter()
    unmatched = 0.0
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name not in instructions:
            if event.get("ph") == "X" and re.match(r"^[a-z_\-]+(\.\d+)?$", name):
                unmatched += event.get("dur", 0) / 1e6
            continue
        kind = hlo_kind(instructions[name])
        if kind:
            seconds[kind] += event.get("dur", 0) / 1e6
    return {"wall_s": wall, "seconds": dict(seconds), "unmatched_s": unmatched}


def run_child(name: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**os.environ, "KERAS_BACKEND": "torch" if name == "reference" else "jax"}
        env["CHRONOS_MOE_JAX_CACHE_DIR"] = "off"
        if name == "jax":
            dump = f"--xla_dump_to={Path(tmp) / 'hlo'} --xla_dump_hlo_as_text"
            dump += " --xla_cpu_enable_xprof_traceme=true"  # one trace event per thunk
            env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), dump]))
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--folder"]
        command += [tmp, "--warmup", str(args.warmup)] + (["--quick"] if args.quick else [])
        subprocess.run(command, env=env, check=True)
        return json.loads(result_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the profile")
    parser.add_argument("--child", choices=["reference", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    if args.child:
        if args.child == "reference":
            result = profile_reference(shape, args.warmup)
        else:
            result = profile_jax(shape, args.warmup, args.folder)
        (args.folder / "result.json").write_text(json.dumps(result))
        return
    results = {name: run_child(name, args) for name in ("reference", "jax")}
    gflop = train_step_flops(shape) / 1e9
    print(f"float32 training step, {'quick' if args.quick else 'chronos-t5-tiny'} shape, ")
    print(f"{gflop:.0f} GFLOP of matmuls per step; seconds summed over threads\n")
    print("| kind | reference (torch) | chronos-moe JAX | JAX − reference |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        ref = results["reference"]["seconds"].get(kind, 0.0)
        ours = results["jax"]["seconds"].get(kind, 0.0)
        print(f"| {kind} | {ref:.2f} s | {ours:.2f} s | {ours - ref:+.2f} s |")
    totals = {name: sum(r["seconds"].values()) for name, r in results.items()}
    print(
        f"| **all** | {totals['reference']:.2f} s | {totals['jax']:.2f} s | "
        f"{totals['jax'] - totals['reference']:+.2f} s |"
    )
    walls = {name: r["wall_s"] for name, r in results.items()}
    print(f"| step wall time | {walls['reference']:.2f} s | {walls['jax']:.2f} s | |")
    rates = {
        name: gflop / r["seconds"]["matmul"]
        for name, r in results.items()
        if r["seconds"].get("matmul")
    }
    print(
        "| matmul GFLOP/s (per thread-second) | "
        + " | ".join(f"{rates.get(name, float('nan')):.0f}" for name in ("reference", "jax"))
        + " | |"
    )
    print(f"\nJAX thunks not found in the dumped HLO: {results['jax']['unmatched_s']:.2f} s")
    out = Path(__file__).resolve().parent / "results" / "profile_train_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"shape": shape, "gflop": gflop, "results": results}, indent=2))


if __name__ == "__main__":
    main()
