"""Token-level experts on JAX: two ways to run the tiles of sorted slots.

`TokenExperts.sorted_experts` pads each expert's group of token slots to tiles
of `S` slots (static shapes under `jit`) and runs every tile through its
expert's feed-forward (`d → f → d`, ReLU). This script times, on random tiles
and weights (E = 8 experts, d = 256), jitted with the library's inference
compiler options:

* **batched**: one batched product `(tiles, S, d) @ (tiles, d, f)` over a copy
  of the weights gathered per tile (the dispatch until 2026-12-04);
* **loop**: `lax.map` over the tiles, a plain 2-D product per tile with its
  expert's weights indexed inside the loop (the dispatch since);
* **floor**: all slots through one expert's weights (no routing at all): what
  the same number of rows costs as one product.

Slots: 320 and 1280 (a decoding step of 8 or 32 series x 20 samples, top-2)
and 32 832 (a training batch of 32 x 513 tokens, top-2).

Usage (from the repository root):

    python benchmarks/token_dispatch.py            # f = 256 (d_ff / 4 of chronos-t5-tiny)
    python benchmarks/token_dispatch.py --width 512 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NUM_EXPERTS, HIDDEN = 8, 256


def median_ms(function, arguments: tuple, calls: int) -> float:
    import jax

    for _ in range(2):
        jax.block_until_ready(function(*arguments))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(function(*arguments))
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256, help="expert width f")
    parser.add_argument("--quick", action="store_true", help="decoding sizes only, 5 calls")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    import chronos_moe.backend  # noqa: F401  (the library's XLA flags)
    from chronos_moe.backend.jax_xla import inference_compiler_options

    options = inference_compiler_options(os.environ.get("XLA_FLAGS", ""), "cpu")
    rng = np.random.default_rng(0)
    shape = (NUM_EXPERTS, HIDDEN, args.width)
    wi = (rng.normal(size=shape) * 0.05).astype("float32")
    wo = (rng.normal(size=shape).transpose(0, 2, 1) * 0.05).astype("float32")

    def batched(tiles, experts, wi, wo):
        hidden = jax.nn.relu(jnp.einsum("tsd,tdf->tsf", tiles, jnp.take(wi, experts, axis=0)))
        return jnp.einsum("tsf,tfd->tsd", hidden, jnp.take(wo, experts, axis=0))

    def loop(tiles, experts, wi, wo):
        return jax.lax.map(lambda a: jax.nn.relu(a[0] @ wi[a[1]]) @ wo[a[1]], (tiles, experts))

    def floor(x, wi, wo):
        return jax.nn.relu(x @ wi) @ wo

    kernels = {
        name: jax.jit(f, compiler_options=options)
        for name, f in (("batched", batched), ("loop", loop), ("floor", floor))
    }
    slot_counts = (320, 1280) if args.quick else (320, 1280, 32832)
    calls = 5 if args.quick else 15
    rows = []
    for slots in slot_counts:
        x = rng.normal(size=(slots, HIDDEN)).astype("float32")
        floor_ms = median_ms(kernels["floor"], (x, wi[0], wo[0]), calls)
        sizes = (32, 128) if slots > 10_000 else (4, 8, 16, 32, 128)
        for size in sizes:
            num_tiles = -(-(slots + NUM_EXPERTS * (size - 1)) // size)
            tiles = rng.normal(size=(num_tiles, size, HIDDEN)).astype("float32")
            experts = (np.arange(num_tiles) * NUM_EXPERTS // num_tiles).astype("int32")
            row = {"slots": slots, "tile": size, "tiles": num_tiles, "floor_ms": floor_ms}
            for name in ("batched", "loop"):
                row[f"{name}_ms"] = median_ms(kernels[name], (tiles, experts, wi, wo), calls)
            rows.append(row)
            print(
                f"slots {slots:>6} tile {size:>3} ({num_tiles:>4} tiles): batched "
                f"{row['batched_ms']:8.3f} ms, loop {row['loop_ms']:8.3f} ms "
                f"(floor {floor_ms:.3f} ms)",
                flush=True,
            )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"width": args.width, "experts": NUM_EXPERTS, "hidden": HIDDEN, "rows": rows}
    (RESULTS_DIR / f"token_dispatch_w{args.width}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
