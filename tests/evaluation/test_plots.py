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
    plot_layer_utilization,
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
    assert labels == {"context (last 24 points)", "actual", "median forecast", "10–90% interval"}


def test_plot_forecast_shows_the_end_of_the_context_and_labels_the_start():
    levels = [0.1, 0.5, 0.9]
    quantiles = np.zeros((12, 3)) + [-1.0, 0.0, 1.0]
    axes = plot_forecast(np.arange(500.0), quantiles, levels, ylabel="load (MW)").axes[0]
    context = axes.lines[0]
    # The last 4 × 12 context points, at their own time steps, then the forecast.
    assert context.get_xdata().tolist() == list(range(452, 500))
    assert axes.get_xlim()[0] > 400
    assert axes.get_ylabel() == "load (MW)" and axes.get_xlabel() == "time step"
    assert [text.get_text() for text in axes.texts] == ["forecast start"]
    # The legend sits right of the axes, off the data.
    legend = axes.get_legend()
    assert legend.get_bbox_to_anchor().x0 > axes.get_window_extent().x1
    shown = plot_forecast(np.arange(500.0), quantiles, levels, context_points=100).axes[0]
    assert len(shown.lines[0].get_xdata()) == 100
    short = plot_forecast(np.arange(10.0), quantiles, levels).axes[0]
    assert len(short.lines[0].get_xdata()) == 10
    assert short.get_legend_handles_labels()[1][0] == "context"


def test_plot_forecast_checks_its_arguments():
    with pytest.raises(ValueError, match=r"must include 0.1 for the band"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"shape \(prediction_length, len\(quantile_levels\)\)"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.1, 0.5, 0.9, 0.95])
    message = r"`target` must hold one value per forecast step: shape \(prediction_length,\) = "
    with pytest.raises(ValueError, match=message + r"\(2,\). Received: target with shape \(3,\)"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.1, 0.5, 0.9], target=np.ones(3))
    with pytest.raises(ValueError, match=r"`context` must be one non-empty series"):
        plot_forecast(np.ones((2, 5)), np.ones((2, 3)), [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"Received: context_points=0"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.1, 0.5, 0.9], context_points=0)
    with pytest.raises(TypeError, match=r"Received: context_points=2.5"):
        plot_forecast(np.ones(5), np.ones((2, 3)), [0.1, 0.5, 0.9], context_points=2.5)
    # One series of `predict_quantiles` output, (1, h, q), and a (1, time) context are accepted.
    assert plot_forecast(np.ones((1, 5)), np.ones((1, 2, 3)), [0.1, 0.5, 0.9]).axes


def test_plot_training_curves_writes_a_png(tmp_path):
    dense = [{"step": s, "ce_loss": 4 / s, "lb_loss": 0.0} for s in range(1, 11)]
    moe = [{"step": s, "ce_loss": 3.9 / s, "lb_loss": 1 + 1 / s} for s in range(1, 11)]
    figure = plot_training_curves({"dense": dense, "moe": moe}, tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png")
    ce_axes, lb_axes = figure.axes
    assert len(ce_axes.lines) == 2 and len(lb_axes.get_lines()) == 2  # the MoE curve + 1.0 line
    # The curves say they are training (not validation) losses.
    for axes in (ce_axes, lb_axes):
        assert axes.get_title().startswith("Training") and axes.get_xlabel() == "training step"
    assert ce_axes.get_ylabel() == "training cross-entropy"
    with pytest.raises(ValueError, match="at least one run"):
        plot_training_curves({})


def test_expert_examples_have_no_rows_for_unused_experts():
    series = [np.arange(5.0)]
    figure = plot_expert_examples(
        [series, [], series * 2, []],
        [["a, series 0: gate 0.90"], [], ["a, series 1: gate 0.70", "a, series 2: gate 0.60"], []],
    )
    assert len(figure.axes) == 4  # 2 rows (experts 0 and 2) × 2 columns
    labels = [axes.get_ylabel() for axes in figure.axes if axes.get_ylabel()]
    assert labels == ["expert 0\nvalue", "expert 2\nvalue"]
    assert figure.axes[2].get_xlabel() == "time step (of the context)"
    assert figure.axes[2].get_title() == "a, series 1: gate 0.70"
    title = figure.get_suptitle()
    assert "highest" in title and "No series was routed to experts 1, 3." in title
    numbered = plot_expert_examples([series, []], experts=[5, 7])
    assert numbered.axes[0].get_ylabel() == "expert 5\nvalue"
    assert "expert 7." in numbered.get_suptitle()


def test_routing_plots_write_pngs(tmp_path, rng):
    indices = np.stack([rng.permutation(4)[:2] for _ in range(20)])
    gates = rng.dirichlet([1, 1], 20)
    plot_expert_utilization([0.4, 0.3, 0.2, 0.1], [0.5, 0.2, 0.2, 0.1], tmp_path / "u.png")
    plot_gate_distribution(indices, gates, 4, tmp_path / "g.png")
    plot_expert_examples(
        [[np.arange(5.0)], [], [np.ones(3), np.zeros(3)]], None, tmp_path / "e.png"
    )
    plot_layer_utilization([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], tmp_path / "l.png")
    assert all(_is_png(tmp_path / name) for name in ("u.png", "g.png", "e.png", "l.png"))


def test_layer_plot_shows_every_share_and_rejects_other_shapes():
    shares = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25] * 4])
    figure = plot_layer_utilization(shares)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert len(texts) == shares.size and texts[:4] == ["40%", "30%", "20%", "10%"]
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), shares)
    with pytest.raises(ValueError, match=r"2-D array .* shape \(4,\)"):
        plot_layer_utilization([0.4, 0.3, 0.2, 0.1])


def test_docstring_examples_run():
    result = doctest.testmod(plots_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
