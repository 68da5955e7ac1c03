"""Figures: forecast fan charts, training curves and the expert-analysis plots.

Every function draws on a `matplotlib.figure.Figure` rendered by the Agg
canvas: no `pyplot`, no display and no global backend switch, so it works
headless (servers, CI) and leaves a notebook's backend alone. Each returns the
`Figure` and, given a `path`, also writes it as PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.config import DEFAULT_QUANTILE_LEVELS


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("Plots need matplotlib: `pip install matplotlib`.") from error
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path: str | os.PathLike | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    return figure


def _level_column(levels: np.ndarray, level: float, name: str) -> int:
    matches = np.flatnonzero(np.isclose(levels, level))
    if matches.size == 0:
        raise ValueError(
            f"`quantile_levels` must include {level} for the {name}. "
            f"Received: quantile_levels={levels.tolist()}"
        )
    return int(matches[0])


def plot_forecast(
    context: Any,
    forecast_quantiles: Any,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    target: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """A fan chart: the context, the 10–90% forecast band and the median.

    Args:
        context: 1-D array-like, the history the forecast continues.
        forecast_quantiles: array-like `(prediction_length, n_quantiles)`.
        quantile_levels: the levels of the columns; must include 0.1, 0.5, 0.9.
            Defaults to 0.1, 0.2, ..., 0.9.
        target: 1-D array-like `(prediction_length,)`, the actual values, drawn
            when given. Defaults to `None`.
        path: where to write the PNG. Defaults to `None` (no file).
        title: str. Defaults to `None`.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> quantiles = np.linspace(-1, 1, 9)[None, :] + np.zeros((4, 1))
    >>> figure = plot_forecast(np.sin(np.arange(20.0)), quantiles)
    >>> len(figure.axes)
    1
    """
    context = np.asarray(context, dtype=np.float64).ravel()
    quantiles = np.asarray(forecast_quantiles, dtype=np.float64)
    levels = np.asarray(quantile_levels, dtype=np.float64)
    if quantiles.ndim != 2 or quantiles.shape[1] != levels.size:
        raise ValueError(
            "`forecast_quantiles` must have shape (prediction_length, len(quantile_levels)) = "
            f"(h, {levels.size}). Received: shape {quantiles.shape}"
        )
    low, median, high = (
        _level_column(levels, level, name)
        for level, name in ((0.1, "band"), (0.5, "median"), (0.9, "band"))
    )
    history_steps = np.arange(len(context))
    future_steps = len(context) + np.arange(len(quantiles))
    figure = _figure(8, 3.5)
    axes = figure.add_subplot()
    axes.plot(history_steps, context, color="black", linewidth=1, label="context")
    if target is not None:
        axes.plot(
            future_steps,
            np.asarray(target).ravel(),
            color="black",
            linestyle="--",
            linewidth=1,
            label="target",
        )
    axes.fill_between(
        future_steps,
        quantiles[:, low],
        quantiles[:, high],
        color="tab:blue",
        alpha=0.3,
        label="10–90% interval",
    )
    axes.plot(future_steps, quantiles[:, median], color="tab:blue", label="median forecast")
    axes.axvline(len(context) - 0.5, color="grey", linewidth=0.5)
    axes.set_xlabel("time step")
    axes.legend(loc="upper left", fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_training_curves(
    logs: Mapping[str, Sequence[Mapping[str, float]]], path: str | os.PathLike | None = None
):
    """Cross-entropy curves of several runs and the load-balancing loss.

    Args:
        logs: `run name -> list of log rows`, each row a dict with `step` and
            `ce_loss` (as `TrainResult.log`); rows with an `lb_loss` draw the
            balance loss of the runs that have a finite, non-zero one (MoE runs;
            dense runs log NaN).
        path: where to write the PNG. Defaults to `None` (no file).

    Returns:
        The `matplotlib.figure.Figure` (two panels: CE, LB).

    Example:

    >>> logs = {"dense": [{"step": 1, "ce_loss": 3.0}, {"step": 2, "ce_loss": 2.5}],
    ...         "moe": [{"step": 1, "ce_loss": 3.1, "lb_loss": 1.2},
    ...                 {"step": 2, "ce_loss": 2.4, "lb_loss": 1.05}]}
    >>> len(plot_training_curves(logs).axes)
    2
    """
    if not logs:
        raise ValueError("`logs` must hold at least one run. Received: an empty dict")
    figure = _figure(10, 3.5)
    ce_axes, lb_axes = figure.subplots(1, 2)
    any_lb = False
    for name, rows in logs.items():
        steps = [row["step"] for row in rows]
        ce_axes.plot(steps, [row["ce_loss"] for row in rows], label=name)
        lb = [row.get("lb_loss", math.nan) for row in rows]
        if any(math.isfinite(value) and value != 0 for value in lb):  # dense runs log NaN
            lb_axes.plot(steps, lb, label=name)
            any_lb = True
    ce_axes.set(xlabel="step", ylabel="cross-entropy", title="Cross-entropy loss")
    ce_axes.legend(fontsize="small")
    lb_axes.set(xlabel="step", ylabel="load-balancing loss", title="Load-balancing loss")
    if any_lb:
        lb_axes.axhline(1.0, color="grey", linewidth=0.5, linestyle=":", label="balanced")
        lb_axes.legend(fontsize="small")
    else:
        lb_axes.text(0.5, 0.5, "no MoE run", ha="center", va="center", transform=lb_axes.transAxes)
    return _save(figure, path)


def plot_expert_utilization(
    utilization: Any, gate_share: Any = None, path: str | os.PathLike | None = None
):
    """Bar chart of each expert's share of the routing slots (and of the gate mass).

    Args:
        utilization: array-like `(num_experts,)`, shares summing to 1.
        gate_share: array-like `(num_experts,)`, shares of the gate weight, drawn
            beside the slot shares when given. Defaults to `None`.
        path: where to write the PNG. Defaults to `None` (no file).

    Returns:
        The `matplotlib.figure.Figure`.
    """
    utilization = np.asarray(utilization, dtype=np.float64)
    experts = np.arange(len(utilization))
    figure = _figure(max(4, 0.6 * len(experts) + 2), 3)
    axes = figure.add_subplot()
    width = 0.4 if gate_share is not None else 0.8
    axes.bar(
        experts - (width / 2 if gate_share is not None else 0),
        utilization,
        width,
        label="routing slots",
    )
    if gate_share is not None:
        axes.bar(experts + width / 2, np.asarray(gate_share), width, label="gate weight")
    axes.axhline(1 / len(experts), color="grey", linestyle=":", label="uniform")
    axes.set(xlabel="expert", ylabel="share", title="Expert utilisation", xticks=experts)
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_gate_distribution(
    expert_indices: Any, gates: Any, num_experts: int, path: str | os.PathLike | None = None
):
    """Histograms of the gate weights each expert receives when it is chosen.

    Args:
        expert_indices: int array-like `(n_series, top_k)`.
        gates: float array-like `(n_series, top_k)`.
        num_experts: int.
        path: where to write the PNG. Defaults to `None` (no file).

    Returns:
        The `matplotlib.figure.Figure`.
    """
    expert_indices, gates = np.asarray(expert_indices), np.asarray(gates, dtype=np.float64)
    figure = _figure(8, 3)
    axes = figure.add_subplot()
    bins = np.linspace(0, 1, 21)
    for expert in range(num_experts):
        values = gates[expert_indices == expert]
        if values.size:
            axes.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"expert {expert}")
    axes.set(xlabel="gate weight", ylabel="series", title="Gate distribution per expert")
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_expert_examples(
    examples: Sequence[Sequence[Any]],
    titles: Sequence[Sequence[str]] | None = None,
    path: str | os.PathLike | None = None,
):
    """A grid of example series: one row per expert, one column per example.

    Args:
        examples: per expert, a list of 1-D series (may be empty).
        titles: per expert, one title per series. Defaults to `None`.
        path: where to write the PNG. Defaults to `None` (no file).

    Returns:
        The `matplotlib.figure.Figure`.
    """
    rows = len(examples)
    columns = max(1, max(len(series) for series in examples))
    figure = _figure(3 * columns, 1.6 * rows + 0.4)
    grid = figure.subplots(rows, columns, squeeze=False)
    for expert, series in enumerate(examples):
        for column in range(columns):
            axes = grid[expert, column]
            axes.tick_params(labelsize="x-small")
            if column < len(series):
                axes.plot(np.asarray(series[column], dtype=np.float64), linewidth=0.8)
                if titles is not None:
                    axes.set_title(titles[expert][column], fontsize="x-small")
            else:
                axes.axis("off")
                if column == 0:
                    axes.text(0.5, 0.5, f"expert {expert}: no series", ha="center", va="center")
            if column == 0:
                axes.set_ylabel(f"expert {expert}", fontsize="small")
    return _save(figure, path)
