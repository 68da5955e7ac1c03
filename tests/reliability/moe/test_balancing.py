"""MoE numerics (issue 9, item 12): the balance loss at its documented values,
the router losses finite for logits of ±1e4, and a warning when one expert
takes over the routing.

That the router logits, its softmax, LB and the z-loss are float32 under
`mixed_bfloat16` is proven in tests/moe: `test_router_outputs_float32_in_a_mixed_precision_model`
(the whole ChronosMoE) and `test_regularizer_computes_in_float32_under_mixed_precision`.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import build_moe_chronos
from chronos_moe.moe.balancing import (
    ExpertCollapseWarning,
    ExpertShareMonitor,
    LoadBalancingRegularizer,
    load_balancing_loss,
)
from tests.moe.helpers import make_batch, tiny_base

CASES = [(n, k) for n in (2, 4, 8, 16) for k in (1, 2, 3) if k < n]


def route(logits, top_k):
    """The router's own path from logits: float32 softmax, then top-k."""
    probs = ops.softmax(ops.convert_to_tensor(logits, "float32"), axis=-1)
    _, indices = ops.top_k(probs, top_k)
    return probs, indices


def collapsed_logits(batch, num_experts, top_k, scale=1e4):
    """Every series puts logit +scale on experts 0..k-1 and -scale elsewhere."""
    logits = np.full((batch, num_experts), -scale, "float32")
    logits[:, :top_k] = scale
    return logits


@pytest.mark.parametrize("num_experts, top_k", CASES)
def test_uniform_routing_gives_one(num_experts, top_k):
    batch = 4 * num_experts
    probs = np.full((batch, num_experts), 1.0 / num_experts, "float32")
    indices = (np.arange(batch)[:, None] + np.arange(top_k)) % num_experts  # every slot once
    value = float(load_balancing_loss(probs, indices, num_experts))
    assert abs(value - 1.0) <= 1e-6


@pytest.mark.parametrize("num_experts, top_k", CASES)
def test_full_collapse_gives_n_over_k(num_experts, top_k):
    """Logits of ±1e4 saturate the softmax: probabilities exactly 0 or 1/k."""
    probs, indices = route(collapsed_logits(12, num_experts, top_k), top_k)
    value = float(load_balancing_loss(probs, indices, num_experts))
    assert abs(value - num_experts / top_k) <= 1e-6


def loss_and_gradient(logits, num_experts, top_k):
    """LB + z-loss of these router logits and its gradient w.r.t. them, with the
    backend's own autodiff."""
    regularizer = LoadBalancingRegularizer(num_experts, weight=1.0, z_loss_weight=1.0)

    def total(values):
        probs, indices = route(values, top_k)
        return regularizer(probs, indices, values)

    if keras.config.backend() == "jax":
        import jax

        outputs = total(logits)
        gradient = jax.grad(lambda values: total(values)["loss"])(ops.convert_to_tensor(logits))
    else:
        import torch

        values = torch.tensor(logits, requires_grad=True)
        outputs = total(values)
        outputs["loss"].backward()
        gradient = values.grad
    return {k: float(ops.convert_to_numpy(v)) for k, v in outputs.items()}, ops.convert_to_numpy(
        gradient
    )


@pytest.mark.parametrize("kind", ["collapsed", "mixed signs", "all equal"])
def test_router_losses_and_gradients_stay_finite_for_huge_logits(kind):
    num_experts, top_k = 8, 2
    rng = np.random.default_rng(0)
    if kind == "collapsed":
        logits = collapsed_logits(6, num_experts, top_k)
    elif kind == "mixed signs":
        logits = rng.choice([-1e4, 1e4], (6, num_experts)).astype("float32")
    else:
        logits = np.full((6, num_experts), -1e4, "float32")
    losses, gradient = loss_and_gradient(logits, num_experts, top_k)
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert np.isfinite(gradient).all()
    # logsumexp of the rows, in float64: z-loss to float32 precision.
    rows = logits.astype("float64")
    peak = rows.max(-1)
    lse = peak + np.log(np.exp(rows - peak[:, None]).sum(-1))
    assert losses["z_loss"] == pytest.approx(np.mean(lse**2), rel=1e-6)


# ---- the collapse warning ------------------------------------------------------------------


def shares_log(shares):
    return {"loss": 1.0, **{f"expert_{i}": s for i, s in enumerate(shares)}}


@pytest.mark.parametrize(
    "shares, top_k, warns",
    [
        ([0.95, 0.05, 0.0, 0.0], 1, True),
        ([0.9, 0.1, 0.0, 0.0], 1, False),  # exactly the limit: allowed
        ([0.25, 0.25, 0.25, 0.25], 1, False),
        ([0.5, 0.48, 0.02, 0.0], 2, True),  # k × share: expert 0 is in every series' pair
        ([0.4, 0.3, 0.2, 0.1], 2, False),
        ([0.5, 0.5], 2, False),  # top_k == num_experts: every expert sees every series
    ],
)
def test_monitor_warns_when_one_expert_takes_over(shares, top_k, warns):
    monitor = ExpertShareMonitor(max_share=0.9)
    monitor.set_model(type("Routed", (), {"top_k": top_k})())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_epoch_end(2, shares_log(shares))
    collapse = [w for w in caught if issubclass(w.category, ExpertCollapseWarning)]
    assert len(collapse) == int(warns)
    if warns:
        assert "Expert 0" in str(collapse[0].message) and "epoch 3" in str(collapse[0].message)


@pytest.mark.parametrize("level, routed", [("series", "series"), ("token", "tokens")])
def test_monitor_names_what_is_routed(level, routed):
    monitor = ExpertShareMonitor(max_share=0.9)
    monitor.set_model(type("Routed", (), {"top_k": 1, "level": level})())
    with pytest.warns(ExpertCollapseWarning, match=f"95.0% of the {routed} in epoch 1"):
        monitor.on_epoch_end(0, shares_log([0.95, 0.05, 0.0, 0.0]))


@pytest.mark.parametrize("max_share", [0.0, -0.5, 1.5])
def test_monitor_share_is_validated(max_share):
    with pytest.raises(ValueError, match=f"max_share={max_share}"):
        ExpertShareMonitor(max_share=max_share)


def test_monitor_fires_in_a_compiled_fit():
    """A router forced onto expert 0 (a huge bias): the warning comes from `fit`,
    with the step compiled (jit on JAX), after the epoch."""
    moe = build_moe_chronos(tiny_base(), num_experts=4, top_k=1)
    bias = np.zeros(4, "float32")
    bias[0] = 1e4
    moe.router.logits.bias.assign(bias)
    moe.compile(optimizer=keras.optimizers.SGD(0.0))  # jit on JAX ("auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moe.fit(make_batch(), epochs=1, batch_size=8, verbose=0, callbacks=[ExpertShareMonitor()])
    messages = [str(w.message) for w in caught if issubclass(w.category, ExpertCollapseWarning)]
    assert messages == [
        "Expert 0 received 100.0% of the series in epoch 1 (more than 90.0%): "
        "the router is collapsing."
    ]
