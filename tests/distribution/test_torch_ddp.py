"""`torchrun --nproc_per_node=2 chronos-moe train` (torch DDP, gloo) against
one process training on the same global batch.

Both runs train a one-layer series-level MoE (3 experts, top 2, the router's
input norms on, selection bias and balance loss) from the same start
checkpoint for 4 AdamW steps at lr 1e-2 on a global batch of 8 series (4 per
rank), dropout off (each rank draws its own dropout stream, which one process
cannot reproduce).

Tolerances: losses within 1e-5, weights within 1e-3. Measured: losses (total,
cross-entropy and balance loss over the global batch) within 7.2e-7, weights
within 8.6e-5 — the same size as the difference between two one-process runs
with 1 and 2 threads (8.2e-5): the router's layer norm feeds a batch norm,
which cancels its scale and shift, so their true gradient is zero and AdamW
turns the rounding of the sums (another order under an all-reduce) into steps
of up to the learning rate's size. With per-rank statistics (`global_sum` as
the identity) the loss and weight tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.multi_device,
    pytest.mark.skipif(
        keras.backend.backend() != "torch",
        reason="torch DDP (torchrun) runs on the torch backend; JAX scales out with "
        "keras.distribution (tests/distribution/test_multi_device.py)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-3
GLOBAL_BATCH = 8


def write_config(folder: Path, name: str, start: Path, data: Path, **overrides) -> Path:
    from tests.training.helpers import small_config

    config = small_config(
        start,
        data,
        folder / name,
        use_moe=True,
        per_device_train_batch_size=GLOBAL_BATCH,
        learning_rate=1e-2,
        **overrides,
    )
    path = folder / f"{name}.yaml"
    path.write_text(config.to_yaml())
    return path


def torchrun(folder: Path, config: Path, *flags: str, processes: int = 2, **env: str):
    """`chronos-moe train --config CONFIG` in `processes` gloo ranks, each
    recording what it wrote under the run's output directory
    (`ddp_worker.py`, into `folder/audit-<output>/rank-N.json`)."""
    output = folder / config.stem
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KERAS_BACKEND": "torch",
        "OMP_NUM_THREADS": "1",
        "DDP_WORKER_WATCH": str(output),
        **env,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "tests.distribution.ddp_worker",
            str(folder / f"audit-{config.stem}"),
            "train",
            "--config",
            str(config),
            *flags,
        ],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def start_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A one-layer Chronos T5 without dropout, and the training data."""
    from chronos_moe import checkpoints
    from chronos_moe.models.chronos_t5 import ChronosT5
    from tests.training import helpers

    keras.utils.set_random_seed(0)
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=helpers.N_TOKENS,
        num_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        dropout_rate=0.0,
        chronos_config={
            "n_tokens": helpers.N_TOKENS,
            "context_length": helpers.CONTEXT_LENGTH,
            "prediction_length": helpers.PREDICTION_LENGTH,
        },
    )
    start = checkpoints.save_chronos(model, folder / "start")
    return start, helpers.make_data(folder)[0]


def max_weight_difference(first: Path, second: Path) -> float:
    from safetensors.numpy import load_file

    a, b = load_file(str(first)), load_file(str(second))
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[key] - b[key]))) for key in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process run (in this process) and the two-rank run of one config."""
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import train

    folder = tmp_path_factory.mktemp("ddp")
    start, data = start_checkpoint(folder)
    single = write_config(folder, "single", start, data)
    train(TrainingConfig.from_yaml(single), verbose=False)
    completed = torchrun(folder, write_config(folder, "ddp", start, data))
    assert completed.returncode == 0, completed.stderr[-4000:]
    return folder, completed


def read_json(path: Path):
    return json.loads(path.read_text())


def test_two_ranks_log_the_losses_of_one_process(runs):
    folder, _ = runs
    single, ddp = read_json(folder / "single/log.json"), read_json(folder / "ddp/log.json")
    assert [row["step"] for row in ddp] == [1, 2, 3, 4]
    for one, two in zip(single, ddp, strict=True):
        for key in ("loss", "ce_loss", "lb_loss"):  # lb_loss: over the global batch
            assert abs(one[key] - two[key]) <= LOSS_TOLERANCE, (key, one, two)


def test_two_ranks_train_the_weights_of_one_process(runs):
    folder, _ = runs
    difference = max_weight_difference(
        folder / "single/final/model.safetensors", folder / "ddp/final/model.safetensors"
    )
    assert difference <= WEIGHT_TOLERANCE
    # The router's balance state (load, selection bias, batch-norm statistics) is
    # not trained by the optimizer: it equals one process' only if every rank
    # folded in the global batch's statistics.
    from safetensors.numpy import load_file

    one = load_file(str(folder / "single/final/model.safetensors"))
    two = load_file(str(folder / "ddp/final/model.safetensors"))
    # Measured: load and bias equal; the batch-norm statistics within 2e-5 (they
    # follow the layer norm's weights, see above).
    for key, tolerance in {
        "moe.router.expert_load": 1e-6,
        "moe.router.selection_bias": 1e-6,
        "moe.router.feature_norm.running_mean": 1e-3,
        "moe.router.feature_norm.running_var": 1e-3,
    }.items():
        np.testing.assert_allclose(two[key], one[key], atol=tolerance, err_msg=key)


def test_the_ranks_train_on_the_global_batch(runs):
    folder, _ = runs
    lines = [json.loads(line) for line in (folder / "ddp/steps.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (folder / "single/steps.jsonl").read_text().splitlines()]
    assert [line["windows"] for line in lines] == [line["windows"] for line in single]
    assert all(len(line["windows"]) == GLOBAL_BATCH for line in lines)


def test_only_rank_zero_writes(runs):
    folder, completed = runs
    audit = folder / "audit-ddp"
    assert read_json(audit / "rank-1.json") == []
    written = read_json(audit / "rank-0.json")
    assert any("checkpoints" in entry for entry in written)  # the audit sees the writes
    single = sorted(p.relative_to(folder / "single") for p in (folder / "single").rglob("*"))
    ddp = sorted(p.relative_to(folder / "ddp") for p in (folder / "ddp").rglob("*"))
    assert [p for p in ddp if p.name != ".lock"] == [p for p in single if p.name != ".lock"]
    assert completed.stdout.count("Final model:") == 1


def test_a_rank_count_that_does_not_divide_the_batch_is_refused(tmp_path):
    from chronos_moe.data import generate_sample_series, write_arrow

    data = write_arrow(generate_sample_series(4, 40), tmp_path / "train.arrow")
    config = write_config(tmp_path, "odd", tmp_path / "absent", data)
    text = config.read_text().replace(
        f"per_device_train_batch_size: {GLOBAL_BATCH}", "per_device_train_batch_size: 3"
    )
    config.write_text(text)
    completed = torchrun(tmp_path, config)
    assert completed.returncode != 0
    assert "must divide the global batch" in completed.stderr
    assert "Received: processes=2, per_device_train_batch_size=3" in completed.stderr
    assert not (tmp_path / "odd").exists()  # refused before anything was written


def test_a_jax_mesh_under_torchrun_is_refused(tmp_path, monkeypatch):
    """The runner's check, in this process posing as one of two ranks."""
    from chronos_moe import backend
    from chronos_moe.errors import DistributionBackendError
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import train

    monkeypatch.setattr(backend, "initialize_processes", lambda cluster=None: True)
    monkeypatch.setattr(backend, "process_count", lambda: 2)
    config = TrainingConfig(
        training_data_paths=[str(tmp_path / "absent.arrow")],
        per_device_train_batch_size=8,
        distribution={"data_parallel": 2},
        output_dir=str(tmp_path / "mesh"),
    )
    with pytest.raises(DistributionBackendError, match="`distribution` is the JAX device mesh"):
        train(config, verbose=False)
    assert not (tmp_path / "mesh").exists()  # refused before anything was read or written


@pytest.mark.slow
def test_a_killed_rank_leaves_a_run_that_resumes_exactly(runs):
    """Rank 1 is SIGKILLed after step 3 (torchrun then stops rank 0); `--resume`
    continues from step-2, the last complete checkpoint, and ends with the
    losses and weights of the uninterrupted two-rank run, bit for bit."""
    folder, _ = runs
    start, data = folder / "start", folder / "train.arrow"
    config = write_config(folder, "killed", start, data)
    killed = torchrun(
        folder, config, CHRONOS_MOE_FAULT="kill:step.end:3", CHRONOS_MOE_FAULT_RANK="1"
    )
    assert killed.returncode != 0
    assert sorted(p.name for p in (folder / "killed/checkpoints").iterdir()) == ["step-2"]
    assert not (folder / "killed/final").exists()
    resumed = torchrun(folder, config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming at step 2" in resumed.stdout
    uninterrupted = read_json(folder / "ddp/log.json")
    continued = read_json(folder / "killed/log.json")
    for one, two in zip(uninterrupted, continued, strict=True):
        assert {k: one[k] for k in ("step", "loss", "ce_loss", "lb_loss")} == {
            k: two[k] for k in ("step", "loss", "ce_loss", "lb_loss")
        }
    difference = max_weight_difference(
        folder / "ddp/final/model.safetensors", folder / "killed/final/model.safetensors"
    )
    assert difference == 0.0


@pytest.mark.slow
def test_a_sigterm_to_one_rank_stops_every_rank_after_the_same_step(runs):
    """Rank 0 alone gets a SIGTERM during step 3: both ranks finish step 3,
    rank 0 commits its checkpoint, both exit cleanly (status 0), and `--resume`
    ends with the uninterrupted run's weights, bit for bit."""
    folder, _ = runs
    config = write_config(folder, "stopped", folder / "start", folder / "train.arrow")
    stopped = torchrun(
        folder, config, CHRONOS_MOE_FAULT="sigterm:step.start:3", CHRONOS_MOE_FAULT_RANK="0"
    )
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    assert stopped.stderr.count("Stopped by SIGTERM after step 3") == 2  # both ranks
    assert sorted(p.name for p in (folder / "stopped/checkpoints").iterdir()) == [
        "step-2",
        "step-3",
    ]
    resumed = torchrun(folder, config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    difference = max_weight_difference(
        folder / "ddp/final/model.safetensors", folder / "stopped/final/model.safetensors"
    )
    assert difference == 0.0
