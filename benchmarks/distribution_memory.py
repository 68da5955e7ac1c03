"""Training state per device on simulated JAX devices: what `keras.distribution`
allocates (weights and AdamW's two moments) for chronos-t5-mini with 8 experts
at each MoE level, on meshes from 8 × 1 to 1 × 8, against the memory model of
docs/scaling.md (12 bytes per parameter held: weight + 2 moments, float32).

    JAX_NUM_CPU_DEVICES=8 KERAS_BACKEND=jax python benchmarks/distribution_memory.py

Prints a Markdown table. Nothing is trained (the gradients, 4 more bytes per
parameter, exist only inside a step); the numbers are the bytes of the arrays
placed on device 0, read from their shards.
"""

from __future__ import annotations

import gc

import jax
import keras

from chronos_moe import ChronosT5, build_moe_chronos
from chronos_moe.distribution import distribute, expert_variables

NUM_EXPERTS = 8
MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]


def bytes_on_first_device(variables) -> int:
    first = jax.devices()[0]
    return sum(
        shard.data.nbytes
        for variable in variables
        for shard in variable.value.addressable_shards
        if shard.device == first
    )


def measure(level: str, mesh: tuple[int, int]) -> dict:
    keras.distribution.set_distribution(None)
    distribute(*mesh, num_experts=NUM_EXPERTS)
    base = ChronosT5.from_preset("mini", vocab_size=4096)
    model = build_moe_chronos(base, num_experts=NUM_EXPERTS, top_k=2, level=level)
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    experts = sum(_size(v) for v in expert_variables(model))
    total = sum(_size(v) for v in model.trainable_variables)
    measured = bytes_on_first_device(model.variables) + bytes_on_first_device(optimizer.variables)
    predicted = 12 * ((total - experts) + experts / mesh[1])
    return {"experts": experts, "total": total, "measured": measured, "predicted": predicted}


def _size(variable) -> int:
    size = 1
    for dim in variable.shape:
        size *= dim
    return size


def main() -> None:
    print(f"{len(jax.devices())} devices")
    print(
        "| level | mesh (data × expert) | parameters (experts) | on device 0: measured | "
        "model: 12 B × held |"
    )
    print("|---|---|---|---|---|")
    for level in ("series", "token"):
        for mesh in MESHES:
            row = measure(level, mesh)
            print(
                f"| {level} | {mesh[0]} × {mesh[1]} | {row['total'] / 1e6:.1f}M "
                f"({row['experts'] / 1e6:.1f}M) | {row['measured'] / 2**20:.0f} MiB | "
                f"{row['predicted'] / 2**20:.0f} MiB |",
                flush=True,
            )
            gc.collect()
    keras.distribution.set_distribution(None)


if __name__ == "__main__":
    main()
