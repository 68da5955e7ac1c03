"""Shared pieces of the MoE tests: a tiny Chronos base model, synthetic
training batches, and the layer harness (config round trip, weight count)."""

import json

import numpy as np

from chronos_moe import ChronosT5

VOCAB = 64
CONTEXT = 33  # 32 observed positions + EOS
HORIZON = 5  # 4 predicted tokens + EOS
TINY_CHRONOS = {"n_tokens": VOCAB, "context_length": 32, "prediction_length": 4}


def tiny_base(**overrides) -> ChronosT5:
    """A one-layer Chronos T5 of the "tiny" width over a 64-token vocabulary."""
    settings = {"vocab_size": VOCAB, "num_layers": 1, "chronos_config": TINY_CHRONOS}
    return ChronosT5.from_preset("tiny", **{**settings, **overrides})


def make_batch(seed: int = 0, batch: int = 8) -> dict[str, np.ndarray]:
    """Training features as the reference builds them: left padding (pad id 0,
    mask False) in half of the series, EOS (id 1) closing context and labels,
    and -100 on some label positions."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(2, VOCAB, (batch, CONTEXT)).astype("int32")
    attention_mask = np.ones((batch, CONTEXT), bool)
    attention_mask[: batch // 2, : CONTEXT // 4] = False
    input_ids[~attention_mask] = 0
    input_ids[:, -1] = 1
    labels = rng.integers(2, VOCAB, (batch, HORIZON)).astype("int32")
    labels[:, -1] = 1
    labels[::3, -2:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def assert_config_round_trip(layer):
    """`get_config` → JSON → `from_config` gives a layer with the same config.

    Returns:
        The rebuilt layer.
    """
    config = json.loads(json.dumps(layer.get_config()))
    restored = type(layer).from_config(config)
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    return restored


def trainable_count(layer) -> int:
    return int(sum(np.prod(weight.shape) for weight in layer.trainable_weights))
