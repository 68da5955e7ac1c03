"""The figures: PNG files written headless, and their argument checks."""

import doctest

import numpy as np
import pytest

from chronos_moe.evaluation import plots as plots_module
from chronos_moe.evaluation.plots import (
    plot_expert_examples,
    plot_expert_utilization,
    plot_forecast,
    plot_gate_distribution,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_plot_forecast_writes_a_png(tmp_path):
    levels = np.linspace(0.1, 0.9, 9)
    quantiles = np.linspace(-1, 1, 9)[None, :] + np.arange(6.0)[:, None]
    figure = plot_forecast(
        np.sin(np.arange(30.0)), quantiles, levels, target=np.arange(6.0),
        path=tmp_path / "sub" / "forecast.png", title="demo",
    )  # fmt: skip
    assert _is_png(tmp_path / "sub" / "forecast.png")
    labels = set(figure.axes[0].get_legend_handles_labels()[1])
    assert labels == {"context", "target", "median forecast", "10–90% interval"}


def test_plot_forecast_checks_its_quantiles():
    with pytest.raises(ValueError, match=r"must include 0.1 for the band"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"shape \(prediction_length, len\(quantile_levels\)\)"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.1, 0.5, 0.9, 0.95])


def test_plot_training_curves_writes_a_png(tmp_path):
    dense = [{"step": s, "ce_loss": 4 / s, "lb_loss": 0.0} for s in range(1, 11)]
    moe = [{"step": s, "ce_loss": 3.9 / s, "lb_loss": 1 + 1 / s} for s in range(1, 11)]
    figure = plot_training_curves({"dense": dense, "moe": moe}, tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png")
    ce_axes, lb_axes = figure.axes
    assert len(ce_axes.lines) == 2 and len(lb_axes.get_lines()) == 2  # the MoE curve + 1.0 line
    with pytest.raises(ValueError, match="at least one run"):
        plot_training_curves({})


def test_routing_plots_write_pngs(tmp_path, rng):
    indices = np.stack([rng.permutation(4)[:2] for _ in range(20)])
    gates = rng.dirichlet([1, 1], 20)
    plot_expert_utilization([0.4, 0.3, 0.2, 0.1], [0.5, 0.2, 0.2, 0.1], tmp_path / "u.png")
    plot_gate_distribution(indices, gates, 4, tmp_path / "g.png")
    plot_expert_examples(
        [[np.arange(5.0)], [], [np.ones(3), np.zeros(3)]], None, tmp_path / "e.png"
    )
    assert all(_is_png(tmp_path / name) for name in ("u.png", "g.png", "e.png"))


def test_docstring_examples_run():
    result = doctest.testmod(plots_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
