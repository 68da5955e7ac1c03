"""`benchmarks/gpu.py`: the peak-rate table, the FLOP count, and its `--dry-run`
(tiny shapes, 2 steps, no MFU) end to end on this machine's CPU, in the torch
pass of the suite."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
_spec = importlib.util.spec_from_file_location("gpu_benchmark", _PATH)
gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu)


@pytest.mark.parametrize(
    "device, tflops",
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),  # not the A10's
        ("NVIDIA L40S", 362.0),  # not the L4's
        ("NVIDIA L4", 121.0),
        ("Tesla T4", None),  # no bfloat16 tensor cores: no MFU
        ("cpu", None),
    ],
)
def test_the_peak_rate_is_found_by_device_name(device, tflops):
    assert gpu.peak_tflops(device, None) == tflops


def test_the_peak_rate_flag_wins():
    assert gpu.peak_tflops("NVIDIA H100 PCIe", 500.0) == 500.0


def test_token_experts_add_two_routed_feed_forwards_and_the_router_per_token_and_block():
    shape = gpu.training_shape("small", dry_run=False)
    tokens = 32 * (513 + 65)
    d, ff, layers = 512, 2048, 6
    extra = gpu.model_flops(shape, "token") - gpu.model_flops(shape, "dense")
    assert extra == 3 * layers * tokens * (2 * (2 * 2 * d * ff) + 2 * d * 8)
    # The series level swaps the one vocabulary head for two experts' heads and blocks.
    assert gpu.model_flops(shape, "moe") > gpu.model_flops(shape, "dense")


def test_dense_flops_are_six_times_the_matmul_weights_per_token_plus_attention():
    shape = {**gpu.training_shape("small", dry_run=False), "batch": 1}
    d, ff, inner, vocab, layers = 512, 2048, 512, 4096, 6
    enc, dec = 513, 65
    weights = 6 * layers * (enc * (4 * d * inner + 2 * d * ff))  # encoder
    weights += 6 * layers * dec * (4 * d * inner + 2 * d * inner + 2 * d * ff)  # decoder
    weights += 6 * layers * enc * 2 * d * inner  # cross-attention keys, values
    weights += 6 * dec * d * vocab  # head
    attention = 6 * 2 * layers * inner * (enc * enc + dec * dec + dec * enc)
    assert gpu.model_flops(shape, "dense") == weights + attention


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "torch") != "torch",
    reason="on JAX the dry run compiles a dozen programs: about 3 minutes on 2 cores, over "
    "this test's 20 s budget (run `benchmarks/gpu.py --dry-run --backends jax` by hand)",
)
def test_dry_run_end_to_end(tmp_path):
    backend = "torch"
    command = [sys.executable, str(_PATH), "--dry-run", "--backends", backend]
    command += ["--output-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_dry_run.json").read_text())
    (backend_result,) = result["results"]
    assert backend_result["backend"] == backend and "incomplete" not in backend_result
    training = backend_result["training"]
    assert [row["model"] for row in training] == list(gpu.MODELS.values())
    for row in training:
        assert "error" not in row, row
        assert len(row["losses"]) == 2 and all(math.isfinite(x) for x in row["losses"])
        assert row["step_s"] > 0 and row["tokens_per_step"] == 4 * (33 + 9)
        assert row["mfu"] is None  # no MFU claims from a dry run
    forecast = backend_result["forecast"]
    assert len(forecast) == 4 and all(row["steady_s"] > 0 for row in forecast)
    markdown = (tmp_path / "gpu_dry_run.md").read_text()
    assert "token E=8 k=2" in markdown and "Bolt (float32)" in markdown
    assert not list(tmp_path.glob("*partial*"))
