"""`analyze_routing`, the series features and the expert-analysis report."""

import doctest
import math

import numpy as np
import pytest

from chronos_moe.data import write_arrow
from chronos_moe.evaluation import (
    analyze_routing,
    run_analyze_experts,
    series_features,
    write_routing_report,
)
from chronos_moe.evaluation import features as features_module
from chronos_moe.evaluation import routing as routing_module
from tests.evaluation.helpers import make_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---- features ------------------------------------------------------------------------------


def test_features_of_typical_series(rng):
    steps = np.arange(64.0)
    sine = series_features(np.sin(2 * np.pi * steps / 8))
    assert sine["seasonality_strength"] > 0.8 and sine["trend_strength"] < 0.1
    line = series_features(5 + 2 * steps)
    assert line["trend_strength"] == pytest.approx(1.0) and line["seasonality_strength"] == 0.0
    assert line["noise_level"] < 0.05
    noise = series_features(rng.normal(size=2000))
    assert noise["noise_level"] == pytest.approx(1.0, abs=0.05)
    assert noise["seasonality_strength"] < 0.15 and noise["trend_strength"] < 0.01
    assert series_features([-2.0, 2.0, np.nan, 4.0])["scale"] == pytest.approx(8 / 3)


def test_features_of_degenerate_series():
    assert series_features(np.full(10, 3.0)) == {
        "scale": 3.0,
        "seasonality_strength": 0.0,
        "trend_strength": 0.0,
        "noise_level": 0.0,
    }
    assert all(math.isnan(v) for v in series_features(np.full(5, np.nan)).values())
    short = series_features([1.0, np.nan, 2.0])
    assert short["scale"] == 1.5 and math.isnan(short["trend_strength"])
    # Missing values inside are interpolated: the same features as the full line.
    gappy = series_features([0.0, 1.0, np.nan, 3.0, 4.0, np.nan])
    assert gappy["trend_strength"] == pytest.approx(1.0)


# ---- routing ---------------------------------------------------------------------------------


def test_analyze_routing_summarises_the_routes(moe_pipeline):
    data = {"a": make_series(4, seed=1), "b": make_series(3, seed=2) + [np.full(40, np.nan)]}
    analysis = analyze_routing(moe_pipeline, data, batch_size=4)
    n, num_experts = 8, 4
    assert analysis.expert_indices.shape == (n, 2) and analysis.router_probs.shape == (n, 4)
    np.testing.assert_array_equal(analysis.dataset, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(analysis.series_index, [0, 1, 2, 3, 0, 1, 2, 3])
    # The routes are the pipeline's, on the contexts the router reads.
    direct = moe_pipeline.route(data["a"] + data["b"])
    np.testing.assert_array_equal(analysis.expert_indices, direct["expert_indices"])
    np.testing.assert_allclose(analysis.gates, direct["gates"], rtol=1e-6)
    assert all(len(c) == 32 for c in analysis.contexts)
    # Utilisation: each expert's share of the n · top_k slots.
    counts = np.bincount(analysis.expert_indices.ravel(), minlength=num_experts)
    np.testing.assert_array_equal(analysis.utilization, counts / (2 * n))
    assert analysis.gate_share.sum() == pytest.approx(1.0)
    assert np.all((analysis.entropy >= 0) & (analysis.entropy <= math.log(num_experts) + 1e-6))
    # Features per expert: the gate-weighted mean over the series routed to it
    # (geometric for the scale).
    for expert in range(num_experts):
        chosen = analysis.expert_indices == expert
        routed = chosen.any(axis=1)
        gate = (analysis.gates * chosen).sum(axis=1)
        noise, scale = analysis.features["noise_level"], analysis.features["scale"]
        defined = routed & ~np.isnan(noise)
        expected_noise = expected_scale = np.nan
        if defined.any():
            weights = gate[defined] / gate[defined].sum()
            expected_noise = np.sum(weights * noise[defined])
            expected_scale = np.exp(np.sum(weights * np.log(scale[defined])))
        np.testing.assert_allclose(analysis.expert_features["noise_level"][expert], expected_noise)
        np.testing.assert_allclose(analysis.expert_features["scale"][expert], expected_scale)
        np.testing.assert_array_equal(
            analysis.dataset_counts[:, expert], [routed[:4].sum(), routed[4:].sum()]
        )
    assert analysis.dataset_counts.sum() == 2 * n
    assert math.isnan(analysis.features["scale"][-1])  # the all-NaN series still gets a route


def test_analyze_routing_needs_a_moe_pipeline(dense_pipeline, moe_pipeline):
    with pytest.raises(TypeError, match="ChronosPipeline of a ChronosMoE model"):
        analyze_routing(dense_pipeline, make_series(2))
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        analyze_routing(moe_pipeline, make_series(2), batch_size=0)


def test_run_analyze_experts_writes_the_report(moe_pipeline, tmp_path, capsys):
    model_dir = moe_pipeline.save_pretrained(tmp_path / "moe")
    paths = [
        write_arrow(make_series(5, seed=1), tmp_path / "one.arrow"),
        write_arrow(make_series(4, seed=2), tmp_path / "two.arrow"),
    ]
    report = run_analyze_experts(model_dir, paths, tmp_path / "report", examples_per_expert=2)
    assert report == tmp_path / "report" / "report.md"
    text = report.read_text()
    for section in ("## Utilisation", "## What each expert attracts", "## Datasets", "## Gates"):
        assert section in text
    assert "| one | 5 |" in text and "| two | 4 |" in text
    for name in ("utilization.png", "gates.png", "examples.png"):
        assert f"]({name})" in text
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "report" / "routing.csv").read_text().count("\n") == 10
    assert "Routed 9 series: 4 experts, top-2" in capsys.readouterr().out


@pytest.mark.parametrize("count, error", [(-1, ValueError), (0, ValueError), (1.5, ValueError)])
def test_write_routing_report_checks_examples_per_expert(moe_pipeline, tmp_path, count, error):
    analysis = analyze_routing(moe_pipeline, make_series(3, seed=1))
    with pytest.raises(error, match=f"Received: examples_per_expert={count}"):
        write_routing_report(analysis, tmp_path / "report", examples_per_expert=count)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("module", [routing_module, features_module])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
