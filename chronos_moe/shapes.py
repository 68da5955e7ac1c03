"""The input shapes the pipelines hand to the model: padded lengths and batch
chunks.

JAX compiles one program per input shape, so forecasting requests of every size
would each pay a compilation. On JAX the pipelines therefore:

* pad a context's length (in tokens or patches) up to the next value of the
  ladder 16, 24, 32, 48, 64, 96, … (powers of two and three quarters of
  them): at most a third of the padded length is padding, and 512 tokens
  need 11 programs;
* cut a batch into chunks of `batch_size` and cover the remainder with at
  most two chunks whose row counts are on the same ladder (1, 2, 3, 4, 6, 8,
  12, …): the largest power of two that fits and the rest padded up to the
  ladder, or the whole remainder padded up to it when that is less work (37
  series with `batch_size=64`: 32 + 5 rows padded to 6; 47: 48). A request
  compiles at most three programs (one full chunk, two for the remainder),
  padding is at most a third of a remainder chunk's rows, and the batch
  shapes are the ladder's values up to `batch_size` (12 for 64).

Padding rows repeat the chunk's last series and are dropped from the
results; padding columns are all-missing context, masked out of attention and
out of the series' scale: the real series' results do not depend on either.
Torch runs eagerly and takes every shape as it is: no padding, chunks of
`batch_size`.

Example:

>>> import chronos_moe.shapes as shapes
>>> shapes.padded_length(100, cap=512, smallest=16) in (100, 128)
True
>>> sum(stop - start for start, stop, _ in shapes.batch_chunks(37, 64))
37
"""

from __future__ import annotations

import numpy as np

from chronos_moe import backend


def static_shapes() -> bool:
    """Whether the active backend compiles per input shape (JAX)."""
    return bool(backend.JIT_COMPILE)


def padded_length(length: int, cap: int, smallest: int = 1) -> int:
    """The length `length` is padded to: on JAX the smallest value >= `length`
    of the ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and three
    quarters of them), at least `smallest` (a power of two) and at most
    `max(cap, length)`; on torch `length` itself."""
    if not static_shapes():
        return length
    power = 1 << (length - 1).bit_length()  # the smallest power of two >= length
    size = power * 3 // 4 if power >= 4 and power * 3 // 4 >= length else power
    return min(max(size, smallest), max(cap, length))


def batch_chunks(rows: int, batch_size: int) -> list[tuple[int, int, int]]:
    """`(start, stop, padded_rows)` for each chunk of `rows` series: chunks of
    `batch_size`, and on JAX the remainder in at most two chunks whose
    `padded_rows` lie on the ladder of `padded_length` (see the module
    docstring); on torch `padded_rows == stop - start`."""
    full = [(start, start + batch_size, batch_size) for start in range(0, rows, batch_size)]
    remainder = rows % batch_size
    if not remainder:
        return full
    start = full.pop()[0]
    if not static_shapes():
        return [*full, (start, rows, remainder)]
    whole = padded_length(remainder, cap=batch_size)
    power = 1 << (remainder.bit_length() - 1)
    rest = remainder - power
    if not rest or power + padded_length(rest, cap=batch_size) >= whole:
        return [*full, (start, rows, whole)]
    split = start + power
    return [*full, (start, split, power), (split, rows, padded_length(rest, cap=batch_size))]


def padded_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with its last row repeated until it has `rows` rows (a chunk's
    `padded_rows`); the results of the repeats are dropped by the caller."""
    missing = rows - len(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)]) if missing else array
