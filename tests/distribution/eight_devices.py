"""Data- and expert-parallel training on eight simulated JAX devices, checked in
one process and reported as one JSON object.

    JAX_NUM_CPU_DEVICES=8 KERAS_BACKEND=jax python -m tests.distribution.eight_devices OUT.json
    (the same with `--slow OUT.json` before the path: the checks marked slow)

The pytest process has already started JAX with one device, so
`test_multi_device.py` runs this once, in a fresh process, and checks the
report. Each training run compiles one train step; there are three (the
series level on one device, on a 4 × 2 mesh and on an 8 × 1 data-parallel
mesh), which is what the CI budget allows. The token level's expert layout
(weights and optimizer slots) is checked on a 4 × 2 mesh without training;
`slow_checks` adds its training runs on both meshes and the CLI runner.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import jax
import keras
import numpy as np

from chronos_moe import ChronosT5, build_moe_chronos
from chronos_moe import distribution as dist
from chronos_moe.checkpoints import save_chronos
from chronos_moe.cli.entry_point import main as chronos_moe
from chronos_moe.data import generate_sample_series, write_arrow
from chronos_moe.training import checkpoint
from chronos_moe.training.logs import read_log

STEPS = 3
BATCH = 8
NUM_EXPERTS = 4
VOCAB = 32


def batches(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`steps` batches of `BATCH` tokenized series, stacked."""
    rng = np.random.default_rng(seed)
    rows = steps * BATCH
    return {
        "input_ids": rng.integers(2, VOCAB, (rows, 12)).astype("int32"),
        "attention_mask": (rng.random((rows, 12)) > 0.1).astype("int32"),
        "labels": rng.integers(2, VOCAB, (rows, 4)).astype("int32"),
    }


def tiny_base(vocab_size: int = VOCAB, **options) -> ChronosT5:
    return ChronosT5.from_preset(
        "tiny",
        vocab_size=vocab_size,
        num_layers=1,
        d_model=8,
        d_ff=16,
        num_heads=2,
        d_kv=4,
        **options,
    )


def tiny_moe(level: str, num_experts: int = NUM_EXPERTS):
    keras.utils.set_random_seed(0)
    return build_moe_chronos(
        tiny_base(), num_experts=num_experts, top_k=2, level=level, router_hidden_dim=8
    )


def build(level: str, mesh: tuple[int, int] | None, num_experts: int = NUM_EXPERTS):
    """A tiny MoE model, built on `mesh` (`None`: one device, no distribution),
    whose distribution stays set."""
    keras.distribution.set_distribution(None)
    if mesh is not None:
        dist.distribute(*mesh, num_experts=num_experts, batch_size=BATCH)
    model = tiny_moe(level, num_experts)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.01), jit_compile=True)
    return model


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["ce_loss"]))


def fit(model, data: dict[str, np.ndarray]) -> list[float]:
    """`model.fit` over `data` in order, one step per `BATCH` rows; the
    running mean of the cross-entropy after each step."""
    record = StepLosses()
    model.fit(data, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return record.losses


def numpy(variables) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(x.astype("float64") - y))) for x, y in zip(a, b, strict=True))


def state(model) -> list[np.ndarray]:
    return numpy(model.variables) + numpy(model.optimizer.variables)


def layout(model) -> dict[str, dict]:
    """Per expert weight and each of its optimizer slots: the mesh axes of each
    dimension and the shape of the part one device holds."""
    slots = {v.path.split("/", 1)[-1]: v for v in model.optimizer.variables}
    found = {}
    for variable in dist.expert_variables(model):
        flat = variable.path.replace("/", "_")
        for name, value in [("weight", variable)] + [
            (slot, slots[f"{flat}_{slot}"]) for slot in ("momentum", "velocity")
        ]:
            array = value.value
            found[f"{variable.path}:{name}"] = {
                "axes": [a if a is None else str(a) for a in array.sharding.spec],
                "shard_shape": list(array.addressable_shards[0].data.shape),
                "devices": len(array.sharding.device_set),
            }
    return found


def replicated_layout(model) -> dict[str, list]:
    """The mesh axes of every model variable that is not an expert weight."""
    experts = {id(v) for v in dist.expert_variables(model)}
    return {
        v.path: [a if a is None else str(a) for a in v.value.sharding.spec]
        for v in model.variables
        if id(v) not in experts
    }


def error_name(function) -> str:
    try:
        function()
    except Exception as error:  # the report names whatever was raised
        return f"{type(error).__name__}: {error}"
    return "no error"


def parity(level: str, meshes: list[tuple[int, int]]) -> dict:
    """One device against each mesh: the same data, the same steps. The
    models, and a report per mesh (`"4x2"`)."""
    data = batches(STEPS)
    single = build(level, None)
    single_losses = fit(single, data)
    models, reports = {"single": single}, {}
    for mesh in meshes:
        sharded = models["x".join(map(str, mesh))] = build(level, mesh)
        sharded_losses = fit(sharded, data)
        reports["x".join(map(str, mesh))] = {
            "losses_single": single_losses,
            "losses_sharded": sharded_losses,
            "loss_difference": max(
                abs(a - b) for a, b in zip(single_losses, sharded_losses, strict=True)
            ),
            "weight_difference": max_difference(
                numpy(single.trainable_variables), numpy(sharded.trainable_variables)
            ),
            "optimizer_difference": max_difference(
                numpy(single.optimizer.variables), numpy(sharded.optimizer.variables)
            ),
        }
    return {"models": models, "reports": reports}


def checkpoints(single, sharded, folder: Path) -> dict:
    """A sharded run's checkpoint into a one-device model and back, and an
    exact resume on the same mesh (restore, then the same step again)."""
    report = {}
    written = checkpoint.save_checkpoint(folder / "sharded", STEPS, sharded, sharded.optimizer, {})
    target = build("series", None)
    checkpoint.load_checkpoint(written, target, target.optimizer)
    report["sharded_to_single"] = max_difference(state(sharded), state(target))
    back = checkpoint.save_checkpoint(folder / "single", STEPS, single, single.optimizer, {})
    other = build("series", (4, 2))  # leaves the 4 × 2 distribution set, as `sharded` had it
    checkpoint.load_checkpoint(back, other, other.optimizer)
    report["single_to_sharded"] = max_difference(state(single), state(other))
    report["single_to_sharded_layout"] = layout(other)
    # Exact resume: one more step, then restore the checkpoint and take it again.
    next_batch = batches(1, seed=1)
    fit(sharded, next_batch)
    after = state(sharded)
    checkpoint.load_checkpoint(written, sharded, sharded.optimizer)
    fit(sharded, next_batch)
    report["resume_difference"] = max_difference(after, state(sharded))
    return report


def errors() -> dict[str, str]:
    """The named errors that need more than one device."""

    def indivisible():
        keras.distribution.set_distribution(None)
        dist.distribute(4, 2)  # num_experts not given: ChronosMoE checks it
        tiny_moe("token", num_experts=3)

    def built_before():
        keras.distribution.set_distribution(None)
        base = tiny_base()
        dist.distribute(4, 2)
        build_moe_chronos(base, num_experts=NUM_EXPERTS, router_hidden_dim=8)

    return {
        "built_before_distribution": error_name(built_before),
        "indivisible_experts": error_name(lambda: build("series", (4, 2), num_experts=3)),
        "indivisible_in_model": error_name(indivisible),
        "mesh_too_large": error_name(lambda: dist.device_mesh(4, 4)),
    }


def cli_runs(folder: Path) -> dict:
    """`chronos-moe train --config` on a 4 × 2 mesh for 2 steps (a checkpoint
    at each); then step 2 again from the step-1 checkpoint on the same mesh
    (exact) and on one device (`distribution` removed: close)."""
    keras.distribution.set_distribution(None)
    data = write_arrow(generate_sample_series(16, 80), folder / "train.arrow")
    save_chronos(tiny_base(64, chronos_config={"n_tokens": 64}), folder / "start")
    config = {
        "training_data_paths": [str(data)],
        "model_id": str(folder / "start"),
        "random_init": False,
        "n_tokens": 64,
        "context_length": 16,
        "prediction_length": 4,
        "min_past": 8,
        "per_device_train_batch_size": 8,
        "max_steps": 2,
        "save_steps": 1,
        "log_steps": 1,
        "use_moe": True,
        "num_experts": 4,
        "router_hidden_dim": 8,
        "distribution": {"data_parallel": 4, "expert_parallel": 2},
    }
    codes, losses = [], {}
    for name, changes, resume in [
        ("mesh", {}, None),
        ("mesh_resumed", {}, "mesh"),
        ("single_resumed", {"distribution": None}, "mesh"),
    ]:
        path = folder / f"{name}.yaml"
        path.write_text(json.dumps({**config, **changes, "output_dir": str(folder / name)}))
        argv = ["train", "--config", str(path), "--backend", "jax"]
        if resume:
            argv += ["--resume-from", str(folder / resume / "checkpoints" / "step-1")]
        codes.append(chronos_moe(argv))
        losses[name] = [row["loss"] for row in read_log(folder / name / "log.csv", upto=10)]
    return {"exit_codes": codes, "losses": losses}


def slow_checks(out: str) -> None:
    token = parity("token", [(4, 2), (8, 1)])
    report = {"token": token["reports"], "token_layout": layout(token["models"]["4x2"])}
    with tempfile.TemporaryDirectory() as folder:
        report["cli"] = cli_runs(Path(folder))
    keras.distribution.set_distribution(None)
    Path(out).write_text(json.dumps(report))


def main(out: str) -> None:
    report = {"devices": len(jax.devices())}
    series = parity("series", [(4, 2), (8, 1)])
    report["series"] = series["reports"]
    sharded = series["models"]["4x2"]
    report["series_layout"] = layout(sharded)
    report["series_replicated"] = replicated_layout(sharded)
    # The token level's layout without training (its training runs: `slow_checks`).
    keras.distribution.set_distribution(None)
    dist.distribute(4, 2)
    token = tiny_moe("token")
    token.compile(optimizer=keras.optimizers.AdamW(1e-2))
    token.optimizer.build(token.trainable_variables)
    report["token_layout"] = layout(token)
    with tempfile.TemporaryDirectory() as folder:
        report["checkpoints"] = checkpoints(series["models"]["single"], sharded, Path(folder))
    report["errors"] = errors()
    keras.distribution.set_distribution(None)
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    assert os.environ.get("KERAS_BACKEND") == "jax", "run under KERAS_BACKEND=jax"
    slow_checks(sys.argv[2]) if sys.argv[1] == "--slow" else main(sys.argv[1])
