"""Figures: forecast fan charts, training curves and the expert-analysis plots.

Every function draws on a `matplotlib.figure.Figure` rendered by the Agg
canvas: no `pyplot`, no display and no global backend switch, so it works
headless (servers, CI) and leaves a notebook's backend alone. Each returns the
`Figure` and, given a `path`, also writes it as PNG.
"""

from __future__ import annotations

import math
import os
import textwrap
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
    context_points: int | None = None,
    ylabel: str = "value",
):
    """A fan chart: the end of the context, the 10–90% forecast band and the median.

    The x axis counts time steps from the start of the context; a dashed line
    marks where the forecast starts. The legend sits to the right of the axes,
    off the data.

    Args:
        context: 1-D array-like, the history the forecast continues.
        forecast_quantiles: array-like `(prediction_length, n_quantiles)` (or
            `(1, prediction_length, n_quantiles)`, one series of
            `predict_quantiles`).
        quantile_levels: the levels of the columns; must include 0.1, 0.5, 0.9.
            Defaults to 0.1, 0.2, ..., 0.9.
        target: 1-D array-like `(prediction_length,)`, the actual values, drawn
            when given. Defaults to `None`.
        path: where to write the PNG. Defaults to `None` (no file).
        title: str. Defaults to `None`.
        context_points: int. How many of the last context values to draw.
            Defaults to `None`: 4 × the prediction length (at least 20), or
            the whole context when it is shorter.
        ylabel: str. The y-axis label: the series' quantity and unit. Defaults
            to `"value"`.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> quantiles = np.linspace(-1, 1, 9)[None, :] + np.zeros((4, 1))
    >>> figure = plot_forecast(np.sin(np.arange(20.0)), quantiles)
    >>> len(figure.axes)
    1
    """
    context, quantiles, levels, target = _checked_forecast(
        context, forecast_quantiles, quantile_levels, target
    )
    horizon = len(quantiles)
    context_points = _checked_context_points(context_points, horizon)
    low, median, high = (
        _level_column(levels, level, name)
        for level, name in ((0.1, "band"), (0.5, "median"), (0.9, "band"))
    )
    first = max(0, len(context) - context_points)
    history_steps = np.arange(first, len(context))
    future_steps = len(context) + np.arange(horizon)
    figure = _figure(9, 3.5)
    axes = figure.add_subplot()
    context_label = "context" if first == 0 else f"context (last {len(history_steps)} points)"
    axes.plot(history_steps, context[first:], color="black", linewidth=1, label=context_label)
    if target is not None:
        axes.plot(future_steps, target, color="black", linestyle="--", linewidth=1, label="actual")
    axes.fill_between(
        future_steps,
        quantiles[:, low],
        quantiles[:, high],
        color="tab:blue",
        alpha=0.3,
        label="10–90% interval",
    )
    axes.plot(future_steps, quantiles[:, median], color="tab:blue", label="median forecast")
    start = len(context) - 0.5
    axes.axvline(start, color="grey", linewidth=0.8, linestyle=":")
    axes.annotate(
        "forecast start",
        (start, 1),
        xycoords=("data", "axes fraction"),
        xytext=(-3, -3),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize="small",
        color="dimgrey",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )
    axes.set(xlabel="time step", ylabel=ylabel)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    if title:
        axes.set_title(title)
    return _save(figure, path)


def _checked_forecast(context, forecast_quantiles, quantile_levels, target):
    """`plot_forecast`'s series as float64 arrays, checked: `(context,
    quantiles, levels, target)`, `target` None when not given."""
    context = np.asarray(context, dtype=np.float64)
    if context.ndim == 2 and context.shape[0] == 1:
        context = context[0]
    if context.ndim != 1 or context.size == 0:
        raise ValueError(
            f"`context` must be one non-empty series (1-D). Received: shape {context.shape}"
        )
    quantiles = np.asarray(forecast_quantiles, dtype=np.float64)
    if quantiles.ndim == 3 and quantiles.shape[0] == 1:
        quantiles = quantiles[0]
    levels = np.asarray(quantile_levels, dtype=np.float64)
    if quantiles.ndim != 2 or quantiles.shape[1] != levels.size:
        raise ValueError(
            "`forecast_quantiles` must have shape (prediction_length, len(quantile_levels)) = "
            f"(h, {levels.size}). Received: shape {quantiles.shape}"
        )
    horizon = len(quantiles)
    if target is not None:
        target = np.asarray(target, dtype=np.float64).ravel()
        if target.shape != (horizon,):
            raise ValueError(
                "`target` must hold one value per forecast step: shape (prediction_length,) = "
                f"({horizon},). Received: target with shape {target.shape}"
            )
    return context, quantiles, levels, target


def _checked_context_points(context_points, horizon: int) -> int:
    """`context_points`, checked; None means 4 × `horizon` (at least 20)."""
    if context_points is None:
        return max(4 * horizon, 20)
    elif isinstance(context_points, bool) or not isinstance(context_points, (int, np.integer)):
        raise TypeError(
            f"`context_points` must be an integer >= 1. Received: context_points={context_points!r}"
        )
    elif context_points < 1:
        raise ValueError(
            f"`context_points` must be an integer >= 1. Received: context_points={context_points}"
        )
    return context_points


def plot_training_curves(
    logs: Mapping[str, Sequence[Mapping[str, float]]], path: str | os.PathLike | None = None
):
    """Training-loss curves of several runs: the cross-entropy and the
    load-balancing loss, both on the training batches (each point the mean of a
    logging interval; no validation loss).

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
    ce_axes.set(
        xlabel="training step",
        ylabel="training cross-entropy",
        title="Training cross-entropy (mean of each logging interval)",
    )
    ce_axes.legend(fontsize="small")
    lb_axes.set(
        xlabel="training step",
        ylabel="load-balancing loss",
        title="Training load-balancing loss (MoE)",
    )
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


def plot_layer_utilization(layer_utilization: Any, path: str | os.PathLike | None = None):
    """Heat map of each token-level expert layer's share of the routing slots per expert.

    Args:
        layer_utilization: array-like `(layers, num_experts)`, each row summing
            to 1 (`RoutingAnalysis.layer_utilization`).
        path: where to write the PNG. Defaults to `None` (no file).

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> figure = plot_layer_utilization([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    >>> figure.axes[0].get_ylabel(), len(figure.axes[0].get_yticks())
    ('expert layer', 2)
    """
    shares = np.asarray(layer_utilization, dtype=np.float64)
    if shares.ndim != 2 or shares.size == 0:
        raise ValueError(
            "`layer_utilization` must be a non-empty 2-D array (layers, num_experts). "
            f"Received: shape {shares.shape}"
        )
    layers, experts = shares.shape
    figure = _figure(max(4, 0.6 * experts + 2.5), max(2.2, 0.45 * layers + 1.2))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="viridis", vmin=0.0, aspect="auto")
    for layer in range(layers):
        for expert in range(experts):
            value = shares[layer, expert]
            color = "black" if value > 0.6 * shares.max() else "white"
            axes.text(expert, layer, f"{value:.0%}", ha="center", va="center", color=color,
                      fontsize="x-small")  # fmt: skip
    axes.set(
        xlabel="expert",
        ylabel="expert layer",
        xticks=range(experts),
        yticks=range(layers),
        title=f"Share of each layer's token slots (uniform: {1 / experts:.0%})",
    )
    figure.colorbar(image, ax=axes, fraction=0.05)
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
    experts: Sequence[int] | None = None,
):
    """A grid of example series: one row per expert that has examples, one
    column per example. Experts without a series get no row; the figure's
    title names them.

    Args:
        examples: per expert, a list of 1-D series (may be empty).
        titles: per expert, one title per series. Defaults to `None`.
        path: where to write the PNG. Defaults to `None` (no file).
        experts: the expert number of each entry of `examples`. Defaults to
            `None`: 0, 1, 2, ...

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> figure = plot_expert_examples([[np.arange(5.0)], [], [np.ones(3), np.zeros(3)]])
    >>> len(figure.axes), figure.get_suptitle().splitlines()[-1]
    (4, 'No series was routed to expert 1.')
    """
    experts = list(range(len(examples))) if experts is None else list(experts)
    if len(experts) != len(examples):
        raise ValueError(
            "`experts` must name the expert of each entry of `examples`. Received: "
            f"{len(experts)} experts for {len(examples)} entries"
        )
    used = [row for row, series in enumerate(examples) if len(series)]
    unused = [experts[row] for row, series in enumerate(examples) if not len(series)]
    rows = max(1, len(used))
    columns = max([1] + [len(examples[row]) for row in used])
    figure = _figure(3 * columns + 0.6, 1.7 * rows + 0.9)
    grid = figure.subplots(rows, columns, squeeze=False)
    for position, row in enumerate(used):
        series = examples[row]
        for column in range(columns):
            axes = grid[position, column]
            axes.tick_params(labelsize="x-small")
            if column >= len(series):
                axes.axis("off")
                continue
            axes.plot(np.asarray(series[column], dtype=np.float64), linewidth=0.8)
            if titles is not None:
                axes.set_title(titles[row][column], fontsize="x-small")
            if column == 0:
                axes.set_ylabel(f"expert {experts[row]}\nvalue", fontsize="small")
            if all(len(examples[below]) <= column for below in used[position + 1 :]):
                # The lowest plot of its column.
                axes.set_xlabel("time step (of the context)", fontsize="x-small")
    if not used:
        grid[0, 0].axis("off")
        grid[0, 0].text(0.5, 0.5, "no series", ha="center", va="center")
    lines = ["Examples per expert (one row each): the series whose gate for the expert is highest"]
    if unused:
        names = "expert " if len(unused) == 1 else "experts "
        lines.append(f"No series was routed to {names}" + ", ".join(map(str, unused)) + ".")
    width = int(13 * figure.get_figwidth())  # characters of a small font per line
    figure.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize="small")
    return _save(figure, path)
