"""The Chronos tokenizer (`MeanScaleUniformBins`) and context preparation, in numpy.

Tokenization runs on the host, before any tensor reaches a Keras backend, so this
module needs nothing but numpy. It reproduces the reference tokenizer of
``chronos-forecasting`` (which runs in torch on the CPU) bit for bit: the same bin
centres, scales, token ids and masks. Two torch kernels decide the last bits and are
reproduced here with their reason: ``torch.linspace`` (fused multiply-add) and the
cascade sum behind ``torch.nansum`` (summation order).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chronos_moe.config import ChronosConfig


class MeanScaleUniformBins:
    """Scales each series by its mean absolute value and bins it into uniform tokens.

    A value `x` of a series with scale `s` (the mean of `|x|` over its observed values,
    1.0 when that is not positive) becomes the token of the bin that holds `x / s`:
    `n_tokens - n_special_tokens - 1` bin centres are evenly spaced from `low_limit`
    to `high_limit`, the bin edges are the midpoints between centres, and the first
    `n_special_tokens` ids are reserved (padding and end of sequence). Missing values
    (NaN) become the padding token with attention mask `False`. An all-NaN series is
    not an error (as in the reference): its scale is 1.0 and all its tokens are
    padding, masked out, apart from the end-of-sequence token.

    Everything is computed in numpy on the host and matches the reference
    `chronos.MeanScaleUniformBins` exactly (same ids, masks and float32 scales).

    Args:
        low_limit: float. The lowest bin centre. The released models use -15.0.
        high_limit: float. The highest bin centre. The released models use 15.0.
        config: `ChronosConfig`. Supplies `n_tokens`, `n_special_tokens`,
            `pad_token_id`, `eos_token_id`, `use_eos_token`, `model_type`,
            `context_length` and `prediction_length`.

    Attributes:
        centers: float32 array `(n_tokens - n_special_tokens - 1,)`, the bin centres,
            bit-identical to `torch.linspace(low_limit, high_limit, n)` on the CPU.
        boundaries: float32 array `(n_tokens - n_special_tokens,)`, the bin edges:
            -1e20, the midpoints between consecutive centres, 1e20.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.config import ChronosConfig
    >>> config = ChronosConfig(context_length=8, prediction_length=4)
    >>> tokenizer = MeanScaleUniformBins.from_config(config)
    >>> context = np.array([[1.0, 2.0, np.nan, 3.0, 2.0]])
    >>> token_ids, attention_mask, scale = tokenizer.context_input_transform(context)
    >>> token_ids.tolist()
    [[2117, 2185, 0, 2254, 2185, 1]]
    >>> attention_mask.tolist()
    [[True, True, False, True, True, True]]
    >>> scale.tolist()
    [2.0]
    >>> values = tokenizer.output_transform(token_ids[:, None, :4], scale)
    >>> values.shape, [round(float(v), 2) for v in values[0, 0]]
    ((1, 1, 4), [1.0, 1.99, -30.0, 3.01])
    """

    def __init__(self, low_limit: float, high_limit: float, config: ChronosConfig) -> None:
        if not low_limit < high_limit:
            raise ValueError(
                "`low_limit` must be smaller than `high_limit`. "
                f"Received: low_limit={low_limit}, high_limit={high_limit}"
            )
        num_centers = config.n_tokens - config.n_special_tokens - 1
        if num_centers < 1:
            raise ValueError(
                "`n_tokens` must leave at least one bin after the special tokens "
                "(n_tokens > n_special_tokens + 1). "
                f"Received: n_tokens={config.n_tokens}, n_special_tokens={config.n_special_tokens}"
            )
        self.low_limit = low_limit
        self.high_limit = high_limit
        self.config = config
        self.centers = _torch_linspace_float32(low_limit, high_limit, num_centers)
        self.boundaries = np.concatenate(
            [
                np.array([-1e20], dtype=np.float32),
                (self.centers[1:] + self.centers[:-1]) / np.float32(2),
                np.array([1e20], dtype=np.float32),
            ]
        )

    @classmethod
    def from_config(cls, config: ChronosConfig) -> MeanScaleUniformBins:
        """Builds the tokenizer from `config.tokenizer_kwargs` and `config`.

        Args:
            config: `ChronosConfig`, the `chronos_config` block of a checkpoint.

        Returns:
            A `MeanScaleUniformBins`.

        Example:

        >>> from chronos_moe.config import ChronosConfig
        >>> tokenizer = MeanScaleUniformBins.from_config(ChronosConfig())
        >>> tokenizer.centers.shape, float(tokenizer.centers[0]), float(tokenizer.centers[-1])
        ((4093,), -15.0, 15.0)
        """
        return cls(**config.tokenizer_kwargs, config=config)

    def context_input_transform(self, context: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Turns a batch of contexts into token ids, an attention mask and scales.

        Contexts longer than `config.context_length` keep their last
        `context_length` values. With `config.use_eos_token` (seq2seq models) an
        end-of-sequence token (mask `True`) is appended.

        Args:
            context: the series, in any form `prepare_context` accepts: typically a
                `(batch, time)` float array, left-padded with NaN.

        Returns:
            A tuple `(token_ids, attention_mask, scale)`: int64 `(batch, length)`, bool
            `(batch, length)` and float32 `(batch,)`, where `length` is
            `min(time, context_length)`, plus one with the end-of-sequence token.

        Example:

        >>> import numpy as np
        >>> from chronos_moe.config import ChronosConfig
        >>> tokenizer = MeanScaleUniformBins.from_config(ChronosConfig(context_length=3))
        >>> ids, mask, scale = tokenizer.context_input_transform(np.arange(10.0)[None])
        >>> ids.shape, mask.all(), scale.tolist()
        ((1, 4), np.True_, [8.0])
        """
        context = prepare_context(context)[:, -self.config.context_length :]
        token_ids, attention_mask, scale = self._input_transform(context)
        if self.config.use_eos_token and self.config.model_type == "seq2seq":
            token_ids, attention_mask = self._append_eos_token(token_ids, attention_mask)
        return token_ids, attention_mask, scale

    def label_input_transform(self, label: Any, scale: Any) -> tuple[np.ndarray, np.ndarray]:
        """Turns future values into token ids with the scale of their contexts.

        Args:
            label: float array `(batch, prediction_length)`; NaN marks missing values.
            scale: float array `(batch,)`, the scales returned by
                `context_input_transform` for the matching contexts.

        Returns:
            A tuple `(token_ids, attention_mask)`: int64 and bool arrays
            `(batch, prediction_length)`, plus one column (the end-of-sequence token)
            with `config.use_eos_token`.

        Example:

        >>> import numpy as np
        >>> from chronos_moe.config import ChronosConfig
        >>> tokenizer = MeanScaleUniformBins.from_config(ChronosConfig(prediction_length=2))
        >>> ids, mask = tokenizer.label_input_transform(np.array([[2.0, np.nan]]), np.array([2.0]))
        >>> ids.tolist(), mask.tolist()
        ([[2185, 0, 1]], [[True, False, True]])
        """
        label = _as_series_batch(label, name="label")
        if label.shape[-1] != self.config.prediction_length:
            raise ValueError(
                "`label` must have `prediction_length` values per series "
                f"(config.prediction_length={self.config.prediction_length}). "
                f"Received: label.shape={label.shape}"
            )
        scale = _as_float32_scale(scale, batch_size=label.shape[0])
        token_ids, attention_mask, _ = self._input_transform(label, scale=scale)
        if self.config.use_eos_token:
            token_ids, attention_mask = self._append_eos_token(token_ids, attention_mask)
        return token_ids, attention_mask

    def output_transform(self, samples: Any, scale: Any) -> np.ndarray:
        """Turns sampled token ids back into values: bin centre times scale.

        Special tokens and ids outside the bins are clamped to the nearest bin.

        Args:
            samples: integer array `(batch, num_samples, horizon)` of token ids.
            scale: float array `(batch,)`, the scales of the contexts.

        Returns:
            float32 array `(batch, num_samples, horizon)`.

        Example:

        >>> import numpy as np
        >>> from chronos_moe.config import ChronosConfig
        >>> tokenizer = MeanScaleUniformBins.from_config(ChronosConfig())
        >>> values = tokenizer.output_transform(np.array([[[3, 2049, 4095]]]), np.array([2.0]))
        >>> np.round(values, 3).tolist()
        [[[-30.0, 0.0, 30.0]]]
        """
        samples = _to_numpy(samples)
        if samples.ndim != 3 or samples.dtype.kind not in "iu":
            raise ValueError(
                "`samples` must be an integer array of token ids shaped "
                "(batch, num_samples, horizon). "
                f"Received: samples.shape={samples.shape}, samples.dtype={samples.dtype}"
            )
        scale = _as_float32_scale(scale, batch_size=samples.shape[0])
        indices = np.clip(
            samples.astype(np.int64) - self.config.n_special_tokens - 1, 0, len(self.centers) - 1
        )
        return self.centers[indices] * scale[:, None, None]

    def _input_transform(
        self, values: np.ndarray, scale: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scales and bins a float32 `(batch, time)` array; the shared core of both
        input transforms."""
        attention_mask = ~np.isnan(values)
        # inf / inf, 0 / 0 and overflow are part of the reference behaviour (the
        # values are then binned or masked exactly as torch does), not errors.
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if scale is None:
                count = attention_mask.sum(axis=-1).astype(np.float32)
                # torch's float32 summation order, so that scales match to the bit.
                scale = _torch_nansum_float32(np.abs(values)) / count
                scale[~(scale > 0)] = np.float32(1.0)
            scaled = values / scale[:, None]
        # `right=True` bucketing of torch: boundaries[i - 1] <= x < boundaries[i] -> i.
        token_ids = np.searchsorted(self.boundaries, scaled, side="right").astype(np.int64)
        token_ids = np.clip(token_ids + self.config.n_special_tokens, 0, self.config.n_tokens - 1)
        token_ids[~attention_mask] = self.config.pad_token_id
        return token_ids, attention_mask, scale

    def _append_eos_token(
        self, token_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        batch_size = token_ids.shape[0]
        eos_ids = np.full((batch_size, 1), self.config.eos_token_id, dtype=np.int64)
        eos_mask = np.ones((batch_size, 1), dtype=bool)
        return (
            np.concatenate([token_ids, eos_ids], axis=1),
            np.concatenate([attention_mask, eos_mask], axis=1),
        )


def left_pad_and_stack(series: Sequence[Any]) -> np.ndarray:
    """Stacks 1-D series of different lengths into one array, left-padded with NaN.

    Args:
        series: a non-empty sequence of non-empty 1-D series (numpy arrays, torch
            tensors, JAX arrays or lists of numbers).

    Returns:
        float32 array `(len(series), max_length)`; each row ends with its series.

    Example:

    >>> left_pad_and_stack([[1.0, 2.0, 3.0], [4.0]]).tolist()
    [[1.0, 2.0, 3.0], [nan, nan, 4.0]]
    """
    if isinstance(series, (str, bytes)) or not isinstance(series, Sequence):
        raise TypeError(
            "`series` must be a list of 1-D series. "
            f"Received: series of type {type(series).__name__}"
        )
    if len(series) == 0:
        raise ValueError("`series` must hold at least one series. Received: series=[]")
    arrays = []
    for index, element in enumerate(series):
        array = _numeric_array(element, name=f"series[{index}]")
        if array.ndim != 1:
            raise ValueError(
                f"Each series must be 1-D. Received: series[{index}] with shape {array.shape}"
            )
        if array.shape[0] == 0:
            raise ValueError(
                f"Each series must hold at least one value. Received: series[{index}] of length 0"
            )
        arrays.append(array.astype(np.float32))
    max_length = max(array.shape[0] for array in arrays)
    stacked = np.full((len(arrays), max_length), np.nan, dtype=np.float32)
    for row, array in zip(stacked, arrays, strict=True):
        row[max_length - array.shape[0] :] = array
    return stacked


def prepare_context(inputs: Any) -> np.ndarray:
    """Turns the accepted forms of forecasting input into a float32 `(batch, time)` array.

    Accepted: one series (a 1-D array, or a list of numbers); a list of 1-D series of
    possibly different lengths (numpy arrays, torch tensors, JAX arrays or lists),
    left-padded with NaN; or a 2-D `(batch, time)` array (numpy, torch or JAX). NaN
    marks missing values; an all-NaN series is accepted.

    Args:
        inputs: the context series, in one of the forms above.

    Returns:
        float32 numpy array `(batch, time)`.

    Raises:
        ValueError: for an empty input, a zero-length series, more than 2 dimensions,
            or a list element that is not 1-D.
        TypeError: for non-numeric input (strings, objects, complex numbers).

    Example:

    >>> import numpy as np
    >>> prepare_context(np.array([1.0, 2.0])).tolist()
    [[1.0, 2.0]]
    >>> prepare_context([np.array([1.0, 2.0]), [3.0]]).tolist()
    [[1.0, 2.0], [nan, 3.0]]
    """
    return _as_series_batch(inputs, name="context")


def _as_series_batch(inputs: Any, name: str) -> np.ndarray:
    """`prepare_context`, with `name` used in the error messages."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise ValueError(f"`{name}` must hold at least one series. Received: {name}={inputs!r}")
        # A flat list of numbers is one series (as `np.asarray` reads it); any other
        # list is a list of series, each left-padded to the longest.
        if all(isinstance(x, (int, float, np.number)) for x in inputs):
            inputs = np.asarray(inputs)
        else:
            try:
                return left_pad_and_stack(inputs)
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"`{name}` given as a list must be a list of 1-D series. {error}"
                ) from None
    array = _numeric_array(inputs, name=name)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"`{name}` must be a 1-D series, a list of 1-D series or a 2-D (batch, time) "
            f"array. Received: {name} with shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(
            f"`{name}` must hold at least one series with at least one value. "
            f"Received: {name} with shape {array.shape}"
        )
    return np.atleast_2d(array).astype(np.float32)


def _to_numpy(value: Any) -> np.ndarray:
    """Converts numpy, torch, JAX or nested-list input to a numpy array on the host."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:  # dtypes numpy lacks (bfloat16): widen exactly to float32
            return value.float().numpy()
    return np.asarray(value)


def _numeric_array(value: Any, name: str) -> np.ndarray:
    try:
        array = _to_numpy(value)
    except (TypeError, ValueError) as error:  # e.g. ragged nested lists
        raise TypeError(
            f"`{name}` must be numeric (an array of numbers). Received: {name}={value!r:.80} "
            f"({error})"
        ) from None
    if array.dtype.kind not in "biuf" and array.dtype.name != "bfloat16":
        raise TypeError(
            f"`{name}` must be numeric (an array of numbers). "
            f"Received: {name} with dtype {array.dtype}: {value!r:.80}"
        )
    return array


def _as_float32_scale(scale: Any, batch_size: int) -> np.ndarray:
    scale = _numeric_array(scale, name="scale").astype(np.float32)
    if scale.shape != (batch_size,):
        raise ValueError(
            f"`scale` must have shape (batch,) = ({batch_size},). "
            f"Received: scale.shape={scale.shape}"
        )
    return scale


# ---------------------------------------------------------------------------
# Bit-exact numpy versions of the two torch CPU kernels the reference relies on.
# ---------------------------------------------------------------------------


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
