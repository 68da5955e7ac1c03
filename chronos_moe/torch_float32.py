"""Bit-exact numpy versions of the two torch CPU kernels the reference Chronos
tokenizer relies on: ``torch.linspace`` (fused multiply-add) and the cascade
sum behind ``torch.nansum`` (summation order). `chronos_moe.tokenizer` uses
them so that its bin centres and scales equal the reference's bit for bit.
"""

from __future__ import annotations

import os
import platform

import numpy as np


def _torch_cpu_traits() -> tuple[int, bool]:
    """How torch's float32 CPU kernels round on this machine: `(lanes, fused)`.

    `lanes` is the width of `at::vec::Vectorized<float>` in the kernel torch runs for
    sums; it fixes the summation order. `fused` says whether `a * b + c` in a scalar
    kernel is compiled to a fused multiply-add. Both follow from the CPU capability
    torch dispatches to (`ATEN_CPU_CAPABILITY` lowers it, as in torch):

    * x86: sums never use the AVX512 kernel (torch registers most reductions for
      AVX2 and below only), and both the AVX2 and the default kernel have 8 lanes;
      the AVX2 kernel (AVX2 + FMA CPUs) fuses, the default one does not.
    * ARM: NEON kernels have 4 lanes, SVE256 kernels 8; both fuse.
    """
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if platform.machine().lower() in ("aarch64", "arm64"):
        sve256 = capability == "sve256" or (capability == "" and _sve_vector_bytes() == 32)
        return (8 if sve256 else 4), True
    features = _numpy_cpu_features()
    avx2 = features.get("AVX2", False) and features.get("FMA3", False)
    return 8, bool(avx2) and capability != "default"


def _numpy_cpu_features() -> dict[str, bool]:
    """The CPU features numpy detected at import (`{"AVX2": True, ...}`).

    numpy has no public API that answers "does this CPU have AVX2 and FMA"
    (`numpy.lib.introspect.opt_func_info` names dispatch targets, whose names
    change between releases), and torch may not be installed; this wrapper is
    the one reader of numpy's private `__cpu_features__`.
    `tests/test_tokenizer.py::test_numpy_cpu_features_private_api` fails
    loudly when numpy changes it.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def _sve_vector_bytes() -> int:
    """The SVE vector length in bytes on Linux/ARM (0 where unknown)."""
    try:
        with open("/proc/sys/abi/sve_default_vector_length") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return 0


_LANES, _FUSED = _torch_cpu_traits()


def _torch_linspace_float32(
    start: float, end: float, steps: int, fused: bool | None = None
) -> np.ndarray:
    """`torch.linspace(start, end, steps)` in float32 on the CPU, bit for bit.

    Torch's kernel computes `step = (end - start) / (steps - 1)` in float32 and then
    `start + step * i` for the first half and `end - step * (steps - 1 - i)` for the
    second. Where the kernel is compiled with FMA (`_FUSED`: every AVX2 or ARM CPU),
    each of these is one fused multiply-add (a single rounding), which plain float32
    numpy arithmetic (two roundings) does not reproduce.
    """
    fused = _FUSED if fused is None else fused
    start32, end32 = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start32], dtype=np.float32)
    step = (end32 - start32) / np.float32(steps - 1)
    index = np.arange(steps)
    first_half = index < steps // 2
    multiplier = np.where(first_half, index, steps - 1 - index).astype(np.float32)
    signed_step = np.where(first_half, step, -step).astype(np.float32)
    base = np.where(first_half, start32, end32).astype(np.float32)
    if fused:
        return _fma_float32(signed_step, multiplier, base)
    return base + signed_step * multiplier


def _fma_float32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """`a * b + c` for float32 arrays with a single rounding (a fused multiply-add).

    The product of two float32 values is exact in float64; the float64 sum is
    corrected with its exact error term (TwoSum) where rounding it to float32 would
    otherwise round twice (a float64 sum that falls exactly between two float32s).
    """
    product = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    total = product + c64
    virtual = total - c64
    error = (c64 - (total - virtual)) + (product - virtual)  # total + error == a*b + c
    rounded = total.astype(np.float32)
    rounded64 = rounded.astype(np.float64)
    toward = np.where(total > rounded64, np.float32(np.inf), np.float32(-np.inf))
    neighbour = np.nextafter(rounded, toward.astype(np.float32))
    tie = (total != rounded64) & ((rounded64 + neighbour.astype(np.float64)) * 0.5 == total)
    upper, lower = np.maximum(rounded, neighbour), np.minimum(rounded, neighbour)
    corrected = np.where(error > 0, upper, lower)
    return np.where(tie & (error != 0), corrected, rounded).astype(np.float32)


def _torch_nansum_float32(values: np.ndarray) -> np.ndarray:
    """`torch.nansum(values, dim=-1)` of a float32 `(batch, n)` array, bit for bit.

    Torch sums float32 in float32 with its own order ("cascade sum",
    `aten/src/ATen/native/cpu/SumKernel.cpp`): the row is read as vectors of
    `_LANES` values, each lane accumulating every `_LANES`-th value over four
    interleaved accumulators with multi-level chunking; the leftover values are then
    added one by one and the lanes last. numpy's pairwise sum (or a float64 sum)
    differs in the last bits of about half of all scales, which moves token ids.

    Exact for every `batch` when `n < 32768` (and for `batch >= 2` at any `n`); a
    single series of 32768 values or more is summed by several threads in torch.
    """
    values = np.where(np.isnan(values), np.float32(0), values).astype(np.float32)
    batch_size, length = values.shape
    if length < _LANES:  # scalar path: one "lane" per row
        return _row_sum(values.T)
    num_vectors = length // _LANES
    vectors = values[:, : num_vectors * _LANES].reshape(batch_size, num_vectors, _LANES)
    lane_sums = _row_sum(vectors.transpose(1, 0, 2))  # (batch, lanes)
    total = np.zeros(batch_size, dtype=np.float32)
    for k in range(num_vectors * _LANES, length):
        total += values[:, k]
    for lane in range(_LANES):
        total += lane_sums[:, lane]
    return total


def _row_sum(items: np.ndarray) -> np.ndarray:
    """torch's `row_sum`: sums `items` along axis 0 (float32), keeping torch's order."""
    size = items.shape[0]
    size_ilp = size // 4
    partial = _multi_row_sum(items[: size_ilp * 4].reshape(size_ilp, 4, *items.shape[1:]))
    total = partial[0]
    for i in range(size_ilp * 4, size):
        total = total + items[i]
    for k in range(1, 4):
        total = total + partial[k]
    return total


def _multi_row_sum(items: np.ndarray) -> np.ndarray:
    """torch's `multi_row_sum`: cascade sum along axis 0 with four chunk levels."""
    size = items.shape[0]
    num_levels = 4
    ceil_log2 = 1 if size <= 2 else (size - 1).bit_length()
    level_power = max(4, ceil_log2 // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((num_levels, *items.shape[1:]), dtype=np.float32)
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            acc[0] += items[i]
            i += 1
        for j in range(1, num_levels):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (level_mask << (j * level_power)):
                break
    while i < size:
        acc[0] += items[i]
        i += 1
    total = acc[0]
    for j in range(1, num_levels):
        total = total + acc[j]
    return total
