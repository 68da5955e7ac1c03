"""ChronosBoltMoE (`build_moe_chronos` on a ChronosBolt): the dense Bolt's
forecasts at the start, training on the quantile loss with logged balance
losses, persistence, routing analysis; and its QuantileExpertHead."""

import numpy as np
import pytest
from keras import ops

from chronos_moe import ChronosPipeline, build_moe_chronos, checkpoints, load_model
from chronos_moe.evaluation.routing import analyze_routing
from chronos_moe.moe.bolt_model import ChronosBoltMoE
from chronos_moe.moe.quantile_experts import QuantileExpertHead
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
from tests.moe.helpers import assert_config_round_trip
from tests.test_chronos_bolt import small_bolt as bolt_base

LEVELS = ["series", "token"]


def batch() -> dict[str, np.ndarray]:
    """Contexts longer than the model's with a short (left-NaN) series, targets with a gap."""
    rng = np.random.default_rng(0)
    context = rng.normal(20.0, 5.0, (3, 40)).astype("float32")
    context[0, :28] = np.nan
    target = rng.normal(20.0, 5.0, (3, 4)).astype("float32")
    target[1, 2] = np.nan
    return {"context": context, "target": target}


def quantiles_of(model, x) -> np.ndarray:
    out = model(x)
    return ops.convert_to_numpy(out["quantiles"] if isinstance(out, dict) else out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """level -> a Bolt MoE whose experts differ (series: noisy copies; token: the
    routers' random start), saved both ways. (Training with `fit` through the
    run: tests/training/test_run.py.)"""
    made = {}
    for level in LEVELS:
        moe = build_moe_chronos(
            bolt_base(), num_experts=4, top_k=2, level=level, expert_init_noise=0.1, seed=1
        )
        folder = tmp_path_factory.mktemp(level)
        checkpoints.save_chronos(moe, folder / "hf")
        moe.save(folder / "model.keras")
        made[level] = (moe, folder)
    return made


@pytest.mark.parametrize("level, top_k", [("series", 1), ("series", 2), ("token", 2)])
def test_a_fresh_bolt_moe_forecasts_exactly_like_the_base(level, top_k):
    base = bolt_base()
    moe = build_moe_chronos(base, num_experts=4, top_k=top_k, level=level)
    assert isinstance(moe, ChronosBoltMoE) and moe.level == level
    expected = quantiles_of(base, batch())
    np.testing.assert_allclose(quantiles_of(moe, batch()), expected, rtol=1e-6, atol=1e-5)
    # Each expert is a copy of the output block, whatever its route.
    if level == "series":
        for variable in moe.experts.expert_weights:
            values = ops.convert_to_numpy(variable)
            np.testing.assert_array_equal(values, np.repeat(values[:1], 4, axis=0))


@pytest.mark.parametrize("level", LEVELS)
def test_the_loss_is_the_quantile_loss_plus_the_weighted_balance_loss(trained, level):
    moe, _ = trained[level]
    assert {m.name for m in moe.metrics} >= {"quantile_loss", "lb_loss"}
    assert "ce_loss" not in {m.name for m in moe.metrics}
    # The quantile loss is the base's (the reference's, test_quantile_loss.py)
    # of the mixed forecasts; the total adds the weighted balance loss.
    x = batch()
    moe.reset_metrics()  # the trackers then hold this call's losses
    loss = moe.compute_loss(x=x, y_pred=moe(x), training=False)
    quantile = moe.base.forecast_loss(x, None, moe(x)["quantiles"])
    assert float(moe.ce_tracker.result()) == pytest.approx(float(quantile), rel=1e-6)
    lb = float(moe.lb_tracker.result())
    assert float(loss) == pytest.approx(float(quantile) + 0.01 * lb, rel=1e-5)


@pytest.mark.parametrize("level", LEVELS)
def test_hugging_face_and_keras_files_round_trip(trained, level):
    moe, folder = trained[level]
    expected = quantiles_of(moe, batch())
    pipeline = ChronosPipeline.from_pretrained(folder / "hf")
    assert isinstance(pipeline, ChronosBoltPipeline)
    assert isinstance(pipeline.model, ChronosBoltMoE) and pipeline.model.level == level
    for model in (pipeline.model, load_model(folder / "model.keras")):
        np.testing.assert_allclose(quantiles_of(model, batch()), expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(pipeline.predict(batch()["context"]), expected, atol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
def test_routing_analysis_of_a_bolt_moe(trained, level):
    moe, _ = trained[level]
    series = [np.arange(40.0), np.ones(20), np.sin(np.arange(50.0)), np.full(9, np.nan)]
    analysis = analyze_routing(ChronosBoltPipeline(moe), series, batch_size=3)
    assert analysis.expert_indices.shape == (4, 2)
    assert analysis.utilization.sum() == pytest.approx(1.0)
    assert (analysis.layer_shares is not None) == (level == "token")
    if level == "series":  # the pipeline's routes are the model's
        routing = moe.route(*moe.encode(batch()["context"])[:2])
        routes = ChronosBoltPipeline(moe).route(batch()["context"])
        np.testing.assert_array_equal(
            routes["expert_indices"], ops.convert_to_numpy(routing["expert_indices"])
        )


def test_quantile_expert_head_layer_contract():
    head = QuantileExpertHead(num_experts=3, intermediate_dim=8, output_dim=6, name="experts")
    hidden = np.random.default_rng(0).normal(size=(2, 1, 5)).astype("float32")
    outputs = head(hidden, np.array([[0, 2], [1, 0]]), np.full((2, 2), 0.5, "float32"))
    assert tuple(outputs.shape) == (2, 1, 6)
    assert len(head.trainable_weights) == 6
    assert_config_round_trip(head)


def test_bad_bolt_moe_arguments_are_named():
    with pytest.raises(ValueError, match="`expert_hidden_dim` must equal d_ff"):
        build_moe_chronos(bolt_base(), expert_hidden_dim=48)  # d_ff is 40
    moe = build_moe_chronos(bolt_base())
    with pytest.raises(TypeError, match="forecast with ChronosBoltPipeline"):
        ChronosPipeline(moe)
