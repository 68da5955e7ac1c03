"""Shared set-up of the layer tests."""

import keras

from chronos_moe.models.chronos_t5 import ChronosT5


def small_model(**overrides) -> ChronosT5:
    """A seeded 2-layer tiny-preset model over a 64-token vocabulary with an
    untied head (its logits are not near zero), context 16, horizon 5."""
    keras.utils.set_random_seed(0)
    return ChronosT5.from_preset(
        "tiny",
        vocab_size=64,
        num_layers=2,
        tie_word_embeddings=False,
        chronos_config={"n_tokens": 64, "context_length": 16, "prediction_length": 5},
        **overrides,
    )
