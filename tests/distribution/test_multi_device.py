"""Data- and expert-parallel training on eight simulated JAX devices.

The checks run in one fresh process (`eight_devices.py`, with
`JAX_NUM_CPU_DEVICES=8`: this one has already started JAX with one device);
each test here reads one part of its JSON report.

Tolerances (float32, AdamW at lr 1e-2 over 3 steps): the losses of the
sharded run match one device's within 1e-5 and every weight within 1e-4
(measured: 5e-7 and 1e-5; the all-reduce sums the gradients in another
order, and Adam's normalised step turns that rounding into weight
differences of about lr · 1e-3). Checkpoints move between meshes exactly,
and a resume on the same mesh repeats a step bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

pytestmark = [
    pytest.mark.multi_device,
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="keras.distribution is JAX-only in released Keras (torch scales out with DDP); "
        "the torch pass checks its named error in tests/test_distribution.py",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-4
# Compile time, not numerics: the eight-device process compiles four train
# steps, and XLA:CPU's optimisation passes would take most of the CI budget.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_checks(out: Path, *flags: str) -> dict:
    """`eight_devices.py` in a fresh process with eight CPU devices; its report."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KERAS_BACKEND": "jax",
        "JAX_NUM_CPU_DEVICES": "8",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip(),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tests.distribution.eight_devices", *flags, str(out)],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_checks(tmp_path_factory.mktemp("eight_devices") / "report.json")


def test_the_process_has_eight_devices(report):
    assert report["devices"] == 8


@pytest.mark.parametrize("mesh", ["4x2", "8x1"])
def test_sharded_training_matches_one_device(report, mesh):
    check_parity(report["series"][mesh])


def check_parity(result: dict) -> None:
    assert len(result["losses_sharded"]) == len(result["losses_single"]) == 3
    assert result["loss_difference"] <= LOSS_TOLERANCE, result
    assert result["weight_difference"] <= WEIGHT_TOLERANCE, result
    assert result["optimizer_difference"] <= WEIGHT_TOLERANCE, result


@pytest.mark.parametrize("level", ["series", "token"])
def test_expert_weights_and_their_optimizer_slots_are_split(report, level):
    check_layout(report[f"{level}_layout"], level)


def check_layout(layout: dict, level: str) -> None:
    names = {key.rsplit(":", 1)[1] for key in layout}
    assert names == {"weight", "momentum", "velocity"}
    # series: up, down, head; token: wi, wo of the encoder's and decoder's block.
    assert len(layout) == (9 if level == "series" else 12)
    for key, placed in layout.items():
        assert placed["axes"] == ["expert", None, None], key
        assert placed["shard_shape"][0] == 4 // 2, key  # 4 experts over 2 devices
        assert placed["devices"] == 8, key


def test_everything_else_is_replicated(report):
    axes = report["series_replicated"]
    assert axes and all(all(a is None for a in spec) for spec in axes.values()), axes


def test_checkpoints_move_between_meshes_exactly(report):
    moved = report["checkpoints"]
    assert moved["sharded_to_single"] == 0.0
    assert moved["single_to_sharded"] == 0.0
    for key, placed in moved["single_to_sharded_layout"].items():
        assert placed["shard_shape"][0] == 2, key  # loading keeps the layout


def test_resume_on_the_same_mesh_is_exact(report):
    assert report["checkpoints"]["resume_difference"] == 0.0


@pytest.mark.parametrize(
    "case, error",
    [
        ("indivisible_experts", "IndivisibleExpertsError"),
        ("indivisible_in_model", "IndivisibleExpertsError"),
        ("mesh_too_large", "MeshSizeError"),
        ("built_before_distribution", "BuiltBeforeDistributionError"),
    ],
)
def test_named_errors_on_eight_devices(report, case, error):
    assert report["errors"][case].startswith(f"{error}:"), report["errors"][case]


@pytest.mark.slow
def test_token_level_training_and_the_cli_runner_across_meshes(tmp_path):
    """Slow (three more compiled train steps and three CLI runs, minutes on 2
    cores): the token level on 4 × 2 and 8 × 1 meshes against one device, and
    `chronos-moe train --config` with `distribution: {data_parallel: 4,
    expert_parallel: 2}`, resumed from its step-1 checkpoint on the same mesh
    (the same step-2 loss, exactly) and on one device (close)."""
    report = run_checks(tmp_path / "report.json", "--slow")
    for mesh in ("4x2", "8x1"):
        check_parity(report["token"][mesh])
    check_layout(report["token_layout"], "token")  # the same after training
    cli = report["cli"]
    assert cli["exit_codes"] == [0, 0, 0]
    losses = cli["losses"]
    assert len(losses["mesh"]) == 2
    assert losses["mesh_resumed"][-1] == losses["mesh"][-1]
    assert losses["single_resumed"][-1] == pytest.approx(losses["mesh"][-1], abs=LOSS_TOLERANCE)
