"""A multi-host JAX run — two processes of two simulated CPU devices each,
joined through a coordinator on 127.0.0.1 and gloo — against one process
of four devices, both running `chronos-moe train --config` on one config.

Both train a one-layer series-level MoE (4 experts, top 2, selection bias and
balance loss, dropout off) on a `data_parallel: 2 × expert_parallel: 2` mesh
for 3 AdamW steps at lr 1e-2 (a checkpoint after each), global batch 8: in the two-process run each
process holds one data-parallel replica (its two devices, one expert shard
each) and reads its 4 series of every batch.

Tolerances: losses within 1e-5, weights within 1e-3 (those of the torch DDP
test: the all-reduce across processes may sum in another order, and the
router's layer norm before a batch norm turns rounding into AdamW steps, see
test_torch_ddp.py). Measured on this mesh: losses and weights equal, bit for
bit; on a `4 × 1` mesh (checked by hand): losses within 5e-7, weights within
1.3e-4.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from tests.distribution.test_multi_device import FAST_COMPILE
from tests.distribution.test_torch_ddp import (
    max_weight_difference,
    read_json,
    start_checkpoint,
    write_config,
)

pytestmark = [
    pytest.mark.multi_device,
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="multi-host runs start with keras.distribution.initialize (JAX-only); torch "
        "scales over processes with torchrun (tests/distribution/test_torch_ddp.py)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-3
MESH = {"data_parallel": 2, "expert_parallel": 2}
STEPS = 3
GLOO_MESSAGE = re.compile(
    r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. "
    r"Expected number of connected peer ranks is : \d+"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(folder: Path, config: Path, devices: int, process: dict[str, str] | None = None):
    """`chronos-moe train --config CONFIG` in a fresh process with `devices`
    CPU devices, recording what it writes (`ddp_worker.py`); `process`: the
    `KERAS_DISTRIBUTION_*` variables of one process of a multi-host run."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")},
        "PYTHONPATH": str(ROOT),
        "KERAS_BACKEND": "jax",
        "OMP_NUM_THREADS": "1",
        "JAX_NUM_CPU_DEVICES": str(devices),
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip(),
        "DDP_WORKER_WATCH": str(folder / config.stem),
        **(process or {}),
    }
    environment.pop("RANK", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.distribution.ddp_worker",
            str(folder / f"audit-{config.stem}"),
            "train",
            "--config",
            str(config),
            "--backend",
            "jax",
        ],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process run (four devices) and the two-process run (two
    devices each) of one config, started together."""
    folder = tmp_path_factory.mktemp("multi_host")
    start, data = start_checkpoint(folder)
    changes = {"distribution": MESH, "num_experts": 4, "max_steps": STEPS, "save_steps": 1}
    single = write_config(folder, "single", start, data, **changes)
    hosts = write_config(folder, "hosts", start, data, **changes)
    address = f"127.0.0.1:{free_port()}"
    started = [launch(folder, single, 4)] + [
        launch(
            folder,
            hosts,
            2,
            {
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            },
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in started]
    for process, (_, stderr) in zip(started, outputs, strict=True):
        assert process.returncode == 0, stderr[-4000:]
    return folder, [stdout for stdout, _ in outputs]


def test_two_processes_log_the_losses_of_one(runs):
    folder, _ = runs
    single, hosts = read_json(folder / "single/log.json"), read_json(folder / "hosts/log.json")
    assert [row["step"] for row in hosts] == list(range(1, STEPS + 1))
    for one, two in zip(single, hosts, strict=True):
        for key in ("loss", "ce_loss", "lb_loss"):
            assert abs(one[key] - two[key]) <= LOSS_TOLERANCE, (key, one, two)


def test_two_processes_train_the_weights_of_one(runs):
    folder, _ = runs
    difference = max_weight_difference(
        folder / "single/final/model.safetensors", folder / "hosts/final/model.safetensors"
    )
    assert difference <= WEIGHT_TOLERANCE
    # The checkpoints gather the expert weights split over both processes.
    difference = max_weight_difference(
        folder / "single/checkpoints/step-2/model.safetensors",
        folder / "hosts/checkpoints/step-2/model.safetensors",
    )
    assert difference <= WEIGHT_TOLERANCE


def test_the_processes_train_on_the_global_batch(runs):
    folder, _ = runs
    lines = [json.loads(line) for line in (folder / "hosts/steps.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (folder / "single/steps.jsonl").read_text().splitlines()]
    assert [line["windows"] for line in lines] == [line["windows"] for line in single]
    assert all(len(line["windows"]) == 8 for line in lines)


def test_only_process_zero_writes_and_prints(runs):
    folder, stdouts = runs
    audit = folder / "audit-hosts"
    assert read_json(audit / "rank-1.json") == []
    assert any("checkpoints" in entry for entry in read_json(audit / "rank-0.json"))
    single = sorted(p.relative_to(folder / "single") for p in (folder / "single").rglob("*"))
    hosts = sorted(p.relative_to(folder / "hosts") for p in (folder / "hosts").rglob("*"))
    assert hosts == single
    assert "2 processes" in stdouts[1] and "Final model" in stdouts[1]
    # Process 1: no progress, no final line, only gloo's own connection messages, which
    # its threads write unsynchronised (two may share a line, followed by a blank one).
    assert GLOO_MESSAGE.sub("", stdouts[2]).strip() == ""
