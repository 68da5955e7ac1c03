"""`layers.common`: `sublayers`, the one wrapper of Keras' private
`Layer._flatten_layers` (this test fails loudly when Keras changes it), and
registration for saving."""

import keras

from chronos_moe.layers.block import T5Block
from chronos_moe.layers.common import register, sublayers
from chronos_moe.models.chronos_t5 import ChronosT5


def test_sublayers_lists_every_nested_layer_once_without_the_layer():
    block = T5Block(num_heads=2, key_value_dim=4, intermediate_dim=8, is_decoder=True, hidden_dim=6)
    block.build((None, None, 6))
    layers = sublayers(block)
    names = [layer.name for layer in layers]
    assert block not in layers
    assert len({id(layer) for layer in layers}) == len(layers)
    for name in ("self_attention", "cross_attention", "feed_forward", "query", "wo"):
        assert name in names, name
    # Nested at any depth: the dense layers of the attention inside the block.
    assert block.self_attention.query in layers


def test_sublayers_of_a_model_reach_every_layer_with_variables():
    model = ChronosT5.from_preset("tiny", vocab_size=32, num_layers=1, d_model=16, d_ff=32)
    owned = {id(v) for layer in sublayers(model) for v in layer.weights}
    assert {id(v) for v in model.weights} <= owned


def test_register_names_the_class_in_the_package():
    @register
    class Probe(keras.layers.Layer):
        pass

    assert keras.saving.get_registered_name(Probe) == "chronos_moe>Probe"


def test_layers_need_their_hidden_dim_in_init():
    import pytest

    from chronos_moe.layers.attention import T5Attention
    from chronos_moe.layers.feed_forward import T5FeedForward

    for make in (
        lambda: T5Attention(num_heads=2, key_value_dim=4),
        lambda: T5FeedForward(intermediate_dim=4, hidden_dim=0),
        lambda: T5Block(num_heads=2, key_value_dim=4, intermediate_dim=8, hidden_dim=None),
    ):
        with pytest.raises(ValueError, match="hidden_dim"):
            make()
    # Sublayers exist before build (created in __init__).
    attention = T5Attention(num_heads=2, key_value_dim=4, hidden_dim=8)
    assert not attention.built and attention.query is not None
