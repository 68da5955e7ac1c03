"""MoEExpertHead: the sparse (gathered) experts equal the dense reference that
runs every expert and mixes with the gates."""

import doctest

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe.moe import experts as experts_module
from chronos_moe.moe.experts import MoEExpertHead
from tests.moe.helpers import assert_config_round_trip, trainable_count

D_MODEL, INNER, VOCAB, EXPERTS = 16, 12, 10, 5


def make_head(seed=0):
    """A built head with every weight random (the residual `down` included, so
    that every part of each expert matters)."""
    head = MoEExpertHead(EXPERTS, VOCAB, INNER)
    head.build((None, None, D_MODEL))
    rng = np.random.default_rng(seed)
    for weight in (head.up, head.down, head.head):
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    return head


def make_routing(batch, top_k, seed=1):
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.permutation(EXPERTS)[:top_k] for _ in range(batch)]).astype("int32")
    gates = rng.random((batch, top_k)).astype("float32") + 0.1
    return indices, gates / gates.sum(-1, keepdims=True)


def dense_reference(head, hidden, indices, gates):
    """Runs all N experts on every row (float64), then mixes the chosen ones.

    Args:
        hidden: `(rows, len, d_model)`, `rows = batch · samples`.
        indices, gates: `(batch, top_k)`.
    """
    up, down, matrix = (
        ops.convert_to_numpy(w).astype("float64") for w in (head.up, head.down, head.head)
    )
    hidden = hidden.astype("float64")
    inner = np.maximum(np.einsum("rtd,edf->ertf", hidden, up), 0.0)  # (N, rows, len, inner)
    expert_hidden = hidden[None] + np.einsum("ertf,efd->ertd", inner, down)
    all_logits = np.einsum("ertd,edv->ertv", expert_hidden, matrix)  # (N, rows, len, vocab)
    samples = hidden.shape[0] // indices.shape[0]
    row_gates = np.zeros((EXPERTS, hidden.shape[0]))  # gate of expert e for row r (0 if not chosen)
    for row in range(hidden.shape[0]):
        series = row // samples
        row_gates[indices[series], row] = gates[series]
    return np.einsum("er,ertv->rtv", row_gates, all_logits)


def test_config_round_trip_and_weight_count():
    head = make_head()
    restored = assert_config_round_trip(head)
    restored.build((None, None, D_MODEL))
    assert [w.name for w in head.trainable_weights] == ["up", "down", "head"]
    expected = EXPERTS * (D_MODEL * INNER + INNER * D_MODEL + D_MODEL * VOCAB)
    assert trainable_count(head) == trainable_count(restored) == expected


def test_symbolic_call_matches_eager_call():
    head = make_head()
    symbolic = head(
        keras.KerasTensor((None, 3, D_MODEL)),
        keras.KerasTensor((None, 2), dtype="int32"),
        keras.KerasTensor((None, 2)),
    )
    indices, gates = make_routing(4, 2)
    eager = head(np.ones((4, 3, D_MODEL), "float32"), indices, gates)
    assert tuple(symbolic.shape[1:]) == tuple(eager.shape[1:]) == (3, VOCAB)


@pytest.mark.parametrize("top_k", [1, 2, EXPERTS])
def test_sparse_head_equals_dense_reference(top_k):
    head = make_head()
    hidden = np.random.default_rng(2).normal(size=(6, 4, D_MODEL)).astype("float32")
    indices, gates = make_routing(6, top_k)
    sparse = ops.convert_to_numpy(head(hidden, indices, gates))
    np.testing.assert_allclose(
        sparse, dense_reference(head, hidden, indices, gates), rtol=1e-4, atol=1e-4
    )


def test_grouped_rows_share_their_series_route():
    """Rows = batch × samples (the samples of a series are consecutive rows) is
    the same as repeating each series' route once per sample."""
    head = make_head()
    batch, samples = 3, 4
    hidden = np.random.default_rng(3).normal(size=(batch * samples, 2, D_MODEL)).astype("float32")
    indices, gates = make_routing(batch, 2)
    grouped = ops.convert_to_numpy(head(hidden, indices, gates))
    repeated = ops.convert_to_numpy(
        head(hidden, np.repeat(indices, samples, axis=0), np.repeat(gates, samples, axis=0))
    )
    np.testing.assert_allclose(grouped, repeated, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        grouped, dense_reference(head, hidden, indices, gates), rtol=1e-4, atol=1e-4
    )


def test_identical_experts_ignore_the_gates():
    """With `down = 0` and one shared head matrix (the function-preserving
    start), every route gives `hidden @ matrix`."""
    head = make_head()
    matrix = np.random.default_rng(4).normal(size=(D_MODEL, VOCAB)).astype("float32")
    head.down.assign(np.zeros(head.down.shape, "float32"))
    head.head.assign(np.repeat(matrix[None], EXPERTS, axis=0))
    hidden = np.random.default_rng(5).normal(size=(4, 3, D_MODEL)).astype("float32")
    indices, gates = make_routing(4, 3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(head(hidden, indices, gates)), hidden @ matrix, rtol=1e-5, atol=1e-5
    )


def test_fresh_residual_blocks_start_at_zero():
    head = MoEExpertHead(EXPERTS, VOCAB, INNER)
    head.build((None, None, D_MODEL))
    assert not ops.convert_to_numpy(head.down).any()
    assert ops.convert_to_numpy(head.up).std() > 0


def test_docstring_examples_run():
    result = doctest.testmod(experts_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
