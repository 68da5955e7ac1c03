"""The input shapes the pipelines hand to the model: padded lengths and batch
chunks.

JAX compiles one program per input shape, so forecasting requests of every size
would each pay a compilation. On JAX the pipelines therefore:

* pad a context's length (in tokens or patches) up to the next power of two
  or three quarters of one (16, 24, 32, 48, 64, 96, …): at most a third of
  the padded length is padding, and 512 tokens need 11 programs;
* split a batch into chunks of `batch_size` and the remainder into powers of
  two (37 series with `batch_size=64`: 32 + 4 + 1), so that no row is padding
  and at most `log2(batch_size) + 2` batch shapes exist.

Padding is all-missing context, masked out of attention and out of the series'
scale: the real series' results do not depend on it. Torch runs eagerly and
takes every shape as it is: no padding, chunks of `batch_size`.

Example:

>>> import chronos_moe.shapes as shapes
>>> shapes.padded_length(100, cap=512, smallest=16) in (100, 128)
True
>>> sum(stop - start for start, stop in shapes.batch_chunks(37, 64))
37
"""

from __future__ import annotations

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


def batch_chunks(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """`(start, stop)` row ranges that cover `rows` series: chunks of
    `batch_size`, and on JAX the remainder split into descending powers of two
    (each chunk a shape compiled once, none padded)."""
    bounds = [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]
    if not static_shapes() or not bounds or bounds[-1][1] - bounds[-1][0] == batch_size:
        return bounds
    start, stop = bounds.pop()
    remainder = stop - start
    while remainder:
        size = 1 << (remainder.bit_length() - 1)
        bounds.append((start, start + size))
        start, remainder = start + size, remainder - size
    return bounds
