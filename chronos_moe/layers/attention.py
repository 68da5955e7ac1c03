"""`T5Attention`: T5's multi-head attention, and the `keras.ops` reference of
the backend's attention kernels.

The layer projects queries, keys and values and hands the attention itself to
one backend kernel: `backend.attention` for whole sequences (`call`),
`backend.decoding_self_attention` or `backend.decoding_cross_attention` for
one position with a cache (`decode_step`). The functions below the layer,
`dot_product_attention`, `decoding_self_attention` and
`decoding_cross_attention`, say in `keras.ops` what those kernels compute; the
tests hold every backend's kernel against them (`tests/backend/`).
"""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.layers.dense import T5Dense
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.validation import positive_int

# A large negative additive bias for masked attention positions. Like
# transformers we use the float32 minimum: exp(min - max) is exactly 0.
MASK_BIAS = -3.4028234663852886e38
# The lowest finite value of each half-precision dtype (MASK_BIAS overflows them).
LOWEST_FINITE = {"bfloat16": -3.3895313892515355e38, "float16": -65504.0}


def cast_bias(bias, dtype):
    """An additive attention bias in `dtype`, masked positions kept finite.

    `MASK_BIAS` (the float32 minimum) rounds to -inf in bfloat16, and a fully
    masked row of -inf gives NaN weights; clamping to the dtype's lowest finite
    value keeps such rows uniform, as in float32. Call it once per pass (the
    encoder and decoder do) so that the blocks do not cast a
    `(batch, heads, len, len)` bias each.
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if keras.backend.standardize_dtype(bias.dtype) == dtype:
        return bias
    if dtype in LOWEST_FINITE:
        bias = ops.maximum(bias, LOWEST_FINITE[dtype])
    return ops.cast(bias, dtype)


def sum_bias_terms(terms):
    """The sum of additive attention-bias terms (`None` for none), each
    broadcast. `T5Attention` takes its bias as one tensor or as such terms
    (e.g. the position bias and the padding mask: training on torch then
    never forms their `(batch, heads, len, len)` sum)."""
    total = None
    for term in terms:
        total = term if total is None else total + term
    return total


@register
class T5Attention(keras.layers.Layer):
    """T5 multi-head attention: no 1/√d scaling, additive bias, optional cache.

    `call` attends over whole sequences (training, the encoder, the decoder's
    full pass); `decode_step` attends from one new position per row with a
    fixed-size cache (generation). Both run the same projections and hand the
    attention to one backend kernel. Keys and values are kept per head,
    `(batch, heads, len, key_value_dim)`, so that both products of the
    attention are batched matrix products that read a cache without copying
    it; a read-only (cross-attention) cache holds its keys already
    transposed, `(batch, heads, key_value_dim, len)`.

    Args:
        num_heads: int. Number of heads.
        key_value_dim: int. Size of each head (`d_kv`).
        dropout_rate: float. Dropout on the attention weights. Defaults to `0.0`.
        initializer_factor: float. Scales the initial standard deviations.
            Defaults to `1.0`.
        hidden_dim: int. Size of the hidden states (`d_model`). Required.

    Call arguments:
        hidden_states: `(batch, q_len, d_model)` queries (and keys/values for
            self-attention).
        key_value_states: optional `(batch, k_len, d_model)` for cross-attention.
        attention_bias: additive bias broadcastable to
            `(batch, heads, q_len, k_len)`: position bias plus `MASK_BIAS` at
            masked keys; or a tuple of such terms, summed (see
            `sum_bias_terms`).
        training: bool. Dropout on the attention weights when true.

    Returns:
        `(batch, q_len, d_model)`.

    Example:

    >>> import numpy as np
    >>> attention = T5Attention(num_heads=2, key_value_dim=4, hidden_dim=8)
    >>> tuple(attention(np.ones((1, 3, 8), "float32")).shape)
    (1, 3, 8)
    """

    def __init__(
        self,
        num_heads: int,
        key_value_dim: int,
        dropout_rate: float = 0.0,
        initializer_factor: float = 1.0,
        hidden_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_value_dim = key_value_dim
        self.dropout_rate = dropout_rate
        self.initializer_factor = initializer_factor
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        # Draws the attention dropout on JAX (its seed generator's state is
        # one of the layer's variables).
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)
        inner = num_heads * key_value_dim

        def dense(name, units, stddev):
            return T5Dense(
                units,
                use_bias=False,
                kernel_initializer=normal_initializer(stddev),
                dtype=self.dtype_policy,
                name=name,
            )

        # HF `_init_weights` (Mesh TF): q ~ (d_model·d_kv)^-0.5, k/v ~ d_model^-0.5,
        # o ~ (heads·d_kv)^-0.5, all times the initializer factor.
        factor = initializer_factor
        self.query = dense("query", inner, factor * (hidden_dim * key_value_dim) ** -0.5)
        self.key = dense("key", inner, factor * hidden_dim**-0.5)
        self.value = dense("value", inner, factor * hidden_dim**-0.5)
        self.output_dense = dense("output", hidden_dim, factor * inner**-0.5)

    def build(self, hidden_states_shape=None, key_value_states_shape=None):
        for layer in (self.query, self.key, self.value):
            layer.build((None, None, self.hidden_dim))
        self.output_dense.build((None, None, self.num_heads * self.key_value_dim))

    def project_key_value(self, states, transpose_keys: bool = False):
        """Keys and values of `states`, `(batch, heads, len, key_value_dim)`
        each; with `transpose_keys` the keys are `(batch, heads, key_value_dim,
        len)` and both are laid out in memory that way (a read-only cache: the
        score product then reads it as it is, step after step)."""
        shape = (ops.shape(states)[0], ops.shape(states)[1], self.num_heads, self.key_value_dim)
        keys = ops.reshape(invoke(self.key, states), shape)  # (batch, len, heads, d_kv)
        values = ops.reshape(invoke(self.value, states), shape)
        values = ops.transpose(values, (0, 2, 1, 3))  # (batch, heads, len, d_kv)
        if not transpose_keys:
            return ops.transpose(keys, (0, 2, 1, 3)), values
        keys = ops.transpose(keys, (0, 2, 3, 1))  # (batch, heads, d_kv, len)
        return backend.contiguous(keys), backend.contiguous(values)

    def projection(self):
        """The query, key and value kernels side by side, `(d_model, 3 · heads
        · key_value_dim)`, in the compute dtype: `decode_step`'s one product
        instead of three (a decoding constant, `ChronosT5.decoding_constants`)."""
        kernels = [self.query.kernel, self.key.kernel, self.value.kernel]
        return ops.cast(ops.concatenate(kernels, axis=1), self.compute_dtype)

    def call(self, hidden_states, key_value_states=None, attention_bias=None, training=False):
        batch, q_len = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        if key_value_states is not None and q_len == 1 and not training:
            return self._attend_from_one_query(hidden_states, key_value_states, attention_bias)
        source = hidden_states if key_value_states is None else key_value_states
        keys, values = self.project_key_value(source)
        query = ops.reshape(
            invoke(self.query, hidden_states), (batch, q_len, self.num_heads, self.key_value_dim)
        )
        query = ops.transpose(query, (0, 2, 1, 3))  # (batch, heads, q_len, d_kv)
        if attention_bias is None:
            terms = (ops.zeros((1, 1, 1, 1), query.dtype),)
        elif isinstance(attention_bias, (tuple, list)):
            terms = tuple(cast_bias(term, query.dtype) for term in attention_bias)
        else:
            terms = (cast_bias(attention_bias, query.dtype),)
        if training and self.dropout_rate > 0:
            rate, seed_generator = self.dropout_rate, self.dropout.seed_generator
        else:
            rate, seed_generator = 0.0, None
        context = backend.attention(query, keys, values, terms, rate, seed_generator)
        return self._output(context, batch, q_len)

    def _attend_from_one_query(self, hidden_states, key_value_states, attention_bias):
        """Cross-attention from one query position per row (inference), without
        the keys and values of every position: with one query `q` per head,
        `q · (X W_k)ᵀ = (q W_kᵀ) · Xᵀ` and `Σ w (X W_v) = (Σ w X) W_v`, so `X`
        is read twice instead of multiplied by two `d_model × heads · d_kv`
        kernels. Chronos-Bolt's single decoder step: per layer, `2 · k_len`
        products with the kernels become `2 · heads` ones.

        Args:
            hidden_states: `(batch, 1, d_model)`.
            key_value_states: `(batch, k_len, d_model)`.
            attention_bias: as for `call`.

        Returns:
            `(batch, 1, d_model)`.
        """
        batch, heads, d_kv = ops.shape(hidden_states)[0], self.num_heads, self.key_value_dim
        query = ops.reshape(invoke(self.query, hidden_states), (batch, heads, d_kv))
        key_kernel = ops.reshape(self._kernel(self.key), (self.hidden_dim, heads, d_kv))
        value_kernel = ops.reshape(self._kernel(self.value), (self.hidden_dim, heads, d_kv))
        folded = ops.einsum("bhd,mhd->bhm", query, key_kernel)  # (batch, heads, d_model)
        scores = ops.einsum("bhm,bkm->bhk", folded, key_value_states)  # (batch, heads, k_len)
        if isinstance(attention_bias, (tuple, list)):
            attention_bias = sum_bias_terms(attention_bias)
        if attention_bias is not None:
            bias = cast_bias(attention_bias, scores.dtype)  # (batch or 1, heads or 1, 1, k_len)
            scores = (scores[:, :, None, :] + bias)[:, :, 0, :]
        # Softmax accumulated in float32, as `dot_product_attention`.
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), scores.dtype)
        mixed = ops.einsum("bhk,bkm->bhm", weights, key_value_states)  # (batch, heads, d_model)
        context = ops.einsum("bhm,mhd->bhd", mixed, value_kernel)  # (batch, heads, d_kv)
        return self._output(context[:, :, None, :], batch, 1)

    def decode_step(
        self,
        hidden_states,
        attention_bias,
        cache,
        cache_index=None,
        projection=None,
        attended_length=None,
    ):
        """Attention from one new position per row (inference) with a cache.

        Args:
            hidden_states: `(batch, 1, d_model)`.
            attention_bias: additive bias, `(1 or cache_batch, heads, 1,
                k_len)`: for self-attention the position bias of this step
                plus the causal mask, for cross-attention the padding bias.
            cache: pair `(keys, values)`. Without `cache_index` it is
                read-only (cross-attention, from `project_key_value(states,
                transpose_keys=True)`): keys `(cache_batch, heads,
                key_value_dim, k_len)`, values `(cache_batch, heads, k_len,
                key_value_dim)`, where `cache_batch` divides `batch` (each
                cache row serves `batch // cache_batch` consecutive rows: the
                samples of a series share their encoder states). With
                `cache_index` (self-attention) both are `(batch, heads, k_len,
                key_value_dim)` and the new keys and values are written at
                `cache_index` first (on torch in place, see
                `backend.update_cache`).
            cache_index: optional int scalar (Python or tensor), the position
                written.
            projection: optional `projection()`, computed once per forecast.
            attended_length: optional Python int: attend only to the first
                `attended_length` cache positions (`attention_bias` then covers
                those). `ChronosT5.decode_step` passes none: the whole cache is
                contiguous and read in place, where a slice of it is strided
                (copied by torch's bfloat16 products), so it attends to all of
                it and masks the unwritten part.

        Returns:
            `(outputs, cache)`: `(batch, 1, d_model)` and the cache (for
            self-attention, the updated one).
        """
        bias = cast_bias(attention_bias, hidden_states.dtype)
        output_kernel = self._kernel(self.output_dense)
        if cache_index is None:  # cross-attention over precomputed keys and values
            outputs = backend.decoding_cross_attention(
                hidden_states, self._kernel(self.query), output_kernel, cache, bias, self.num_heads
            )
            return outputs, cache
        return backend.decoding_self_attention(
            hidden_states,
            self.projection() if projection is None else projection,
            output_kernel,
            cache,
            cache_index,
            attended_length,
            bias,
            self.num_heads,
        )

    def _kernel(self, dense):
        """``dense``'s kernel in the compute dtype (a mixed dtype policy keeps
        float32 variables; `decode_step` is called outside `Layer.__call__`,
        whose autocast would cast them)."""
        if self.compute_dtype == self.variable_dtype:
            return dense.kernel
        return ops.cast(dense.kernel, self.compute_dtype)

    def _output(self, context, batch, q_len):
        """The output projection of the per-head context `(batch, heads,
        q_len, d_kv)`: `(batch, q_len, d_model)`."""
        if ops.shape(context)[2] != 1:  # one query per row: the transpose moves nothing
            context = ops.transpose(context, (0, 2, 1, 3))  # (batch, q_len, heads, d_kv)
        context = ops.reshape(context, (batch, q_len, self.num_heads * self.key_value_dim))
        return invoke(self.output_dense, context)

    def compute_output_spec(self, hidden_states, *args, **kwargs):
        return keras.KerasTensor(hidden_states.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "dropout_rate": self.dropout_rate,
            "initializer_factor": self.initializer_factor,
            "hidden_dim": self.hidden_dim,
        }


# ---- the keras.ops reference of the backend's attention kernels -------------------------


def dot_product_attention(query, keys, values, bias, dropout=None):
    """``dropout(softmax(query · keysᵀ + bias)) · values`` in `keras.ops`, T5's
    attention without the 1/√d scaling: what `backend.attention` computes.

    Args:
        query: `(batch, heads, q_len, d)`.
        keys, values: `(batch, heads, k_len, d)`.
        bias: additive, broadcastable to `(batch, heads, q_len, k_len)`.
        dropout: optional function applied to the attention weights.

    Returns:
        `(batch, heads, q_len, d)`.
    """
    scores = ops.matmul(query, ops.swapaxes(keys, 2, 3)) + ops.cast(bias, query.dtype)
    # Softmax accumulated in float32: half-precision sums lose the small
    # differences between large logits.
    weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), query.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return ops.matmul(weights, values)


def decoding_self_attention(
    hidden, projection, output_kernel, cache, index, attended_length, bias, num_heads
):
    """Cached self-attention for one new position per row, in `keras.ops`:
    what `backend.decoding_self_attention` computes.

    Args:
        hidden: `(batch, 1, d_model)`, the normalised inputs.
        projection: `(d_model, 3 · heads · d_kv)`, query, key and value
            kernels side by side.
        output_kernel: `(heads · d_kv, d_model)`.
        cache: `(keys, values)`, each `(batch, heads, max_length, d_kv)`.
        index: int, the position written.
        attended_length: int or `None`: attend to the first `attended_length`
            cache positions (all when `None`).
        bias: `(1, heads, 1, attended_length or max_length)`, position bias
            plus causal mask.
        num_heads: int.

    Returns:
        `((batch, 1, d_model), (keys, values))`, the updated cache.

    Example:

    >>> ones = keras.ops.ones
    >>> cache = (ones((2, 1, 4, 3)), ones((2, 1, 4, 3)))
    >>> out, (keys, _) = decoding_self_attention(
    ...     ones((2, 1, 5)), ones((5, 9)), ones((3, 5)), cache, 1, 2, ones((1, 1, 1, 2)), 1)
    >>> tuple(out.shape), float(keras.ops.convert_to_numpy(keys)[0, 0, 1, 0])
    ((2, 1, 5), 5.0)
    """
    batch, inner = ops.shape(hidden)[0], ops.shape(output_kernel)[0]
    projected = ops.reshape(
        ops.matmul(hidden, projection), (batch, 3, num_heads, inner // num_heads)
    )
    query, key, value = (projected[:, i, :, None, :] for i in range(3))  # (batch, heads, 1, d_kv)
    keys = ops.slice_update(cache[0], (0, 0, index, 0), key)
    values = ops.slice_update(cache[1], (0, 0, index, 0), value)
    length = ops.shape(keys)[2] if attended_length is None else attended_length
    context = dot_product_attention(query, keys[:, :, :length], values[:, :, :length], bias)
    return ops.matmul(ops.reshape(context, (batch, 1, inner)), output_kernel), (keys, values)


def decoding_cross_attention(hidden, query_kernel, output_kernel, cache, bias, num_heads):
    """Cross-attention for one new position per row over precomputed encoder
    keys and values, in `keras.ops`: what `backend.decoding_cross_attention`
    computes.

    Args:
        hidden: `(batch, 1, d_model)`, the normalised inputs.
        query_kernel: `(d_model, heads · d_kv)`.
        output_kernel: `(heads · d_kv, d_model)`.
        cache: `(keys, values)`: keys transposed `(kv_batch, heads, d_kv,
            enc_len)`, values `(kv_batch, heads, enc_len, d_kv)`, where
            `kv_batch` divides `batch`: each cache row serves `batch //
            kv_batch` consecutive rows.
        bias: broadcastable to `(kv_batch, heads, 1, enc_len)` (the padding
            bias).
        num_heads: int.

    Returns:
        `(batch, 1, d_model)`.

    Example:

    >>> ones = keras.ops.ones
    >>> cache = (ones((1, 2, 3, 7)), ones((1, 2, 7, 3)))
    >>> out = decoding_cross_attention(
    ...     ones((4, 1, 5)), ones((5, 6)), ones((6, 5)), cache, ones((1, 1, 1, 7)), 2)
    >>> tuple(out.shape)
    (4, 1, 5)
    """
    batch, inner = ops.shape(hidden)[0], ops.shape(output_kernel)[0]
    group = batch // ops.shape(cache[0])[0]  # rows per cache row
    query = ops.reshape(ops.matmul(hidden, query_kernel), (batch, num_heads, inner // num_heads))
    keys = ops.repeat(ops.swapaxes(cache[0], 2, 3), group, axis=0)  # (batch, heads, enc_len, d_kv)
    values = ops.repeat(cache[1], group, axis=0)
    if ops.shape(bias)[0] != 1:
        bias = ops.repeat(bias, group, axis=0)
    context = dot_product_attention(query[:, :, None, :], keys, values, bias)
    return ops.matmul(ops.reshape(context, (batch, 1, inner)), output_kernel)
