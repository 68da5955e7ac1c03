"""What Chronos-Bolt trains on: the quantile (pinball) loss of its standardised
forecasts against the standardised future, as the reference's
`ChronosBoltModelForForecasting.forward(..., target=...)` computes it."""

from __future__ import annotations

from keras import ops


def quantile_loss(scaled_quantiles, scaled_target, target_mask, quantile_levels):
    """The reference Chronos-Bolt training loss, in float32.

    `2 · |(y - q_τ) · (1[y <= q_τ] - τ)|` per series, quantile level `τ` and
    step, zero where the target is not observed; then averaged over the
    quantile levels, summed over the steps and averaged over the series. (The
    reference reduces in this order: its `mean(dim=-2)` runs over the levels,
    though its comment says "horizon".) A target shorter than the forecast is
    padded with unobserved steps, as the reference does.

    Args:
        scaled_quantiles: `(batch, levels, prediction_length)`, the forecasts
            in the units of the standardised context.
        scaled_target: `(batch, target_length)`, `target_length <=
            prediction_length`, standardised with the context's loc and scale;
            NaN where missing.
        target_mask: `(batch, target_length)`, true where the target is
            observed (and counts).
        quantile_levels: sequence of floats, one per level.

    Returns:
        The loss, a float32 scalar.

    Example:

    >>> import numpy as np
    >>> q = np.array([[[0.0, 1.0], [1.0, 2.0]]], "float32")  # 1 series, levels 0.1 and 0.9
    >>> y = np.array([[1.0, np.nan]], "float32")
    >>> round(float(quantile_loss(q, y, ~np.isnan(y), [0.1, 0.9])), 6)  # mean(2·0.1·1, 0) + 0
    0.1
    """
    quantiles = ops.cast(scaled_quantiles, "float32")
    horizon = quantiles.shape[-1]
    target = ops.cast(scaled_target, "float32")
    mask = ops.cast(target_mask, "bool")
    pad = horizon - target.shape[-1]
    if pad:
        target = ops.pad(target, ((0, 0), (0, pad)))
        mask = ops.pad(mask, ((0, 0), (0, pad)))
    target = ops.where(mask, target, 0.0)[:, None, :]  # (batch, 1, horizon)
    levels = ops.convert_to_tensor(quantile_levels, "float32")[None, :, None]
    below = ops.cast(target <= quantiles, "float32")
    loss = 2.0 * ops.abs((target - quantiles) * (below - levels))
    loss = loss * ops.cast(mask, "float32")[:, None, :]  # (batch, levels, horizon)
    return ops.mean(ops.sum(ops.mean(loss, axis=1), axis=-1))
