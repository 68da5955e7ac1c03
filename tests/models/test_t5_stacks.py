"""`T5Stacks.store_settings`: both model families check their shared settings
the same way, with named errors, before any layer is made."""

import pytest

from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from tests.test_chronos_bolt import BOLT_CONFIG

SHAPE = {"d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2}
T5_CHRONOS = {"n_tokens": 32, "context_length": 16, "prediction_length": 4}


def make(family, **change):
    if family == "t5":
        return ChronosT5(vocab_size=32, chronos_config=T5_CHRONOS, **{**SHAPE, **change})
    return ChronosBolt(chronos_config=BOLT_CONFIG, **{**SHAPE, **change})


@pytest.mark.parametrize("family", ["t5", "bolt"])
@pytest.mark.parametrize(
    "change, message",
    [
        ({"d_model": 0}, r"`d_model` must be a positive integer. Received: d_model=0"),
        ({"num_heads": 2.0}, r"`num_heads` must be a positive integer. Received: num_heads=2.0"),
        ({"feed_forward_proj": "swish"}, r"`feed_forward_proj` must be one of .*'swish'"),
        ({"feed_forward_proj": None}, r"`feed_forward_proj` must be one of .*None"),
        ({"initializer_factor": -1.0}, r"`initializer_factor` must be a finite number >= 0"),
        ({"initializer_factor": float("nan")}, r"finite number >= 0. .*nan"),
        ({"initializer_factor": True}, r"finite number >= 0. .*True"),
    ],
)
def test_bad_settings_are_named(family, change, message):
    with pytest.raises(ValueError, match=message):
        make(family, **change)


@pytest.mark.parametrize("family", ["t5", "bolt"])
def test_settings_are_stored_and_decoder_layers_default_to_encoder_layers(family):
    model = make(family, num_layers=2, feed_forward_proj="gated-gelu", initializer_factor=0.5)
    assert (model.num_layers, model.num_decoder_layers) == (2, 2)
    assert (model.feed_forward_proj, model.initializer_factor) == ("gated-gelu", 0.5)
    assert make(family, num_decoder_layers=3).num_decoder_layers == 3
    config = model.get_config()
    assert {name: config[name] for name in SHAPE} == {**SHAPE, "num_layers": 2}
