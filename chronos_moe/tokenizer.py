"""The Chronos tokenizer (`MeanScaleUniformBins`) and context preparation, in numpy.

Tokenization runs on the host, before any tensor reaches a Keras backend, so this
module needs nothing but numpy. It reproduces the reference tokenizer of
``chronos-forecasting`` (which runs in torch on the CPU) bit for bit: the same bin
centres, scales, token ids and masks. Two torch kernels decide the last bits and are
reproduced here with their reason: ``torch.linspace`` (fused multiply-add) and the
cascade sum behind ``torch.nansum`` (summation order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from chronos_moe.torch_float32 import (  # noqa: F401 (the tests read them here too)
    _FUSED,
    _LANES,
    _fma_float32,
    _numpy_cpu_features,
    _torch_cpu_traits,
    _torch_linspace_float32,
    _torch_nansum_float32,
)

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
