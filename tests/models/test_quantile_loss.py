"""ChronosBolt's training loss against the reference's
`ChronosBoltModelForForecasting.forward(..., target=...).loss`, on one
checkpoint the reference wrote (weights scaled up, see `checkpoint_factory`),
float32, on the active backend."""

import keras
import numpy as np
import pytest
import torch

from chronos_moe.checkpoints import load_chronos
from chronos_moe.models.quantile_loss import quantile_loss
from tests.checkpoint_factory import load_bolt_reference_pipeline, make_bolt_reference_checkpoint

PREDICTION_LENGTH = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = make_bolt_reference_checkpoint(
        tmp_path_factory.mktemp("bolt"),
        num_layers=1,
        context_length=32,
        prediction_length=PREDICTION_LENGTH,
        input_patch_size=8,
        quantiles=(0.1, 0.3, 0.5, 0.9),
    )
    return load_chronos(directory), load_bolt_reference_pipeline(directory).model


def batch(target_length: int = 6) -> dict[str, np.ndarray]:
    """Contexts longer than the model's, with NaN (a left-padded short series, a
    missing stretch) and a targets with missing steps, around a large level."""
    rng = np.random.default_rng(1)
    context = rng.normal(50.0, 8.0, (3, 40)).astype("float32")
    context[0, :30] = np.nan
    context[1, 20:25] = np.nan
    target = rng.normal(50.0, 8.0, (3, target_length)).astype("float32")
    target[1, 2] = target[2, -1] = np.nan
    return {"context": context, "target": target}


def reference_loss(reference, x) -> float:
    tensors = {key: torch.from_numpy(value) for key, value in x.items()}
    with torch.no_grad():
        return float(reference(**tensors).loss)


@pytest.mark.parametrize("target_length", [PREDICTION_LENGTH, 5])
def test_the_loss_is_the_references(models, target_length):
    ours, reference = models
    x = batch(target_length)
    loss = ours.compute_loss(x=x, y_pred=ours(x))
    expected = reference_loss(reference, x)
    assert expected > 1.0  # forecasts far from the target: errors would show
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), expected, rtol=1e-5)


def test_an_explicit_target_mask_is_the_references(models):
    ours, reference = models
    x = batch()
    x["target_mask"] = np.random.default_rng(2).random(x["target"].shape) < 0.6
    x["target_mask"] &= ~np.isnan(x["target"])
    loss = ours.compute_loss(x=x, y_pred=ours(x))
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(loss)), reference_loss(reference, x), rtol=1e-5
    )


def test_a_target_longer_than_the_horizon_is_refused(models):
    ours, _ = models
    x = batch(PREDICTION_LENGTH + 1)
    with pytest.raises(ValueError, match="at most prediction_length=8"):
        ours.compute_loss(x=x, y_pred=ours(batch()))


def test_the_pinball_loss_by_hand():
    # One series, levels 0.2 and 0.8, two steps; the second step is missing.
    q = np.array([[[0.0, 5.0], [2.0, 5.0]]], "float32")
    y = np.array([[1.0, np.nan]], "float32")
    # Step 1: level 0.2 under-forecasts by 1 -> 2·0.2·1; level 0.8 over by 1 -> 2·0.2·1.
    loss = quantile_loss(q, y, ~np.isnan(y), [0.2, 0.8])
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), 0.4, rtol=1e-6)
