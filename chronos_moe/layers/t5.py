"""T5 building blocks in backend-agnostic Keras 3.

Read top to bottom: layer norm → relative-position bias → attention (with a
fixed-size key/value cache) → feed-forward → block. The numerics follow
`transformers`' T5 exactly (see `tests/test_parity_t5.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import keras
from keras import ops

from chronos_moe import backend  # also chooses the backend before Keras is used
from chronos_moe.layers.dropout import FastDropout

register = keras.saving.register_keras_serializable(package="chronos_moe")

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


_DIRECT_CALLS = contextvars.ContextVar("chronos_moe_direct_layer_calls", default=False)


def invoke(layer: keras.Layer, *args, **kwargs):
    """Calls `layer`: through `Layer.__call__`, or straight to `layer.call`
    inside `direct_layer_calls`.

    The model's layers call their sublayers through this, so that inference
    can skip Keras' per-call bookkeeping (argument binding, input conversion,
    name scopes, autocast and training-flag propagation: about 10 ms of the
    20 ms of one torch decoding step of chronos-t5-tiny at 20 rows).
    """
    if layer.built and _DIRECT_CALLS.get():  # an unbuilt layer needs __call__ to build
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


@contextlib.contextmanager
def direct_layer_calls(model: keras.Layer) -> Iterator[bool]:
    """Within this context `invoke` calls layers' `call` directly.

    For inference on already converted backend tensors (the decoding loop):
    every `call` here is then written for tensors of the compute dtype and
    passes `training` explicitly. Keras' `__call__` also reads the variables
    cast to the compute dtype under a mixed dtype policy (e.g.
    `mixed_bfloat16`); such a model keeps the ordinary calls (the context
    yields `False`), everything else yields `True`.

    Example:

    >>> import numpy as np
    >>> norm = T5LayerNorm()
    >>> norm.build((1, 4))
    >>> x = keras.ops.ones((1, 4))
    >>> with direct_layer_calls(norm) as direct:
    ...     y = invoke(norm, x)
    >>> direct, tuple(y.shape)
    (True, (1, 4))
    """
    layers = [model, *model._flatten_layers(include_self=False)]
    if any(layer.dtype_policy.compute_dtype != layer.variable_dtype for layer in layers):
        yield False
        return
    token = _DIRECT_CALLS.set(True)
    try:
        yield True
    finally:
        _DIRECT_CALLS.reset(token)


def normal_initializer(stddev: float) -> keras.initializers.Initializer:
    """N(0, stddev²) — T5 initialises every weight this way (Mesh TF / HF `_init_weights`)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


@register
class T5Dense(keras.layers.Dense):
    """A `keras.layers.Dense` whose product goes through `backend.matmul`
    (bfloat16 products accumulated in float32 on JAX, see there); used without
    a bias, as everywhere in T5.

    Example:

    >>> import numpy as np
    >>> dense = T5Dense(4, use_bias=False)
    >>> tuple(dense(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 4)
    """

    def call(self, inputs, training=None):
        outputs = backend.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


@register
class T5LayerNorm(keras.layers.Layer):
    """T5's RMS layer norm: scales by the root mean square, no mean, no bias.

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.

    Example:

    >>> import numpy as np
    >>> norm = T5LayerNorm()
    >>> y = norm(np.ones((2, 3, 8), "float32") * 3.0)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y), 1.0, atol=1e-5))
    True
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        # The mean square is computed in float32 so that half-precision inputs
        # do not overflow; the result is cast back to the compute dtype.
        return backend.rms_norm(inputs, self.scale, self.epsilon, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def relative_position_bucket(
    relative_position, bidirectional: bool, num_buckets: int, max_distance: int
):
    """Maps relative positions (key − query) to T5's bucket ids.

    Half of the buckets (per direction when ``bidirectional``) hold the exact
    distances 0 … max_exact − 1; the other half cover max_exact … max_distance
    in logarithmically growing bins: bucket = max_exact + ⌊log(d / max_exact) /
    log(max_distance / max_exact) · (buckets − max_exact)⌋, clamped to the last
    bucket. Unidirectional (decoder) attention folds all future positions into
    bucket 0. Computed in float32 like the reference; the test suite checks it
    against transformers for every distance up to 5000.
    """
    buckets = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = ops.cast(relative_position > 0, relative_position.dtype) * num_buckets
        relative_position = ops.abs(relative_position)
    else:
        relative_position = -ops.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # log(0) = -inf for the small distances; those entries are replaced below.
    scaled = ops.log(ops.maximum(ops.cast(relative_position, "float32"), 1.0) / max_exact)
    scaled = scaled / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = max_exact + ops.cast(scaled, relative_position.dtype)
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(is_small, relative_position, large)


@register
class T5RelativePositionBias(keras.layers.Layer):
    """Learned per-head attention bias indexed by bucketed relative position.

    Args:
        num_heads: int. Number of attention heads.
        num_buckets: int. Number of relative-position buckets. Defaults to `32`.
        max_distance: int. Distance beyond which positions share a bucket.
            Defaults to `128`.
        bidirectional: bool. `True` for the encoder, `False` for the causal
            decoder. Defaults to `True`.
        initializer_stddev: float. Initial standard deviation (HF:
            `initializer_factor · d_model^-0.5`). Defaults to `1.0`.

    Call arguments:
        query_positions: int tensor `(q_len,)`.
        key_positions: int tensor `(k_len,)`.

    Returns:
        Bias of shape `(1, num_heads, q_len, k_len)`.

    Example:

    >>> bias = T5RelativePositionBias(num_heads=4)
    >>> tuple(bias(keras.ops.arange(5), keras.ops.arange(7)).shape)
    (1, 4, 5, 7)
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
        initializer_stddev: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.initializer_stddev = initializer_stddev

    def build(self, query_positions_shape=None, key_positions_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=normal_initializer(self.initializer_stddev),
        )

    def call(self, query_positions, key_positions):
        relative = (
            ops.cast(key_positions, "int32")[None, :] - ops.cast(query_positions, "int32")[:, None]
        )  # (q_len, k_len)
        buckets = relative_position_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        values = ops.take(self.embeddings, buckets, axis=0)  # (q_len, k_len, heads)
        return ops.expand_dims(ops.transpose(values, (2, 0, 1)), 0)  # (1, heads, q_len, k_len)

    def compute_output_spec(self, query_positions, key_positions):
        return keras.KerasTensor(
            (1, self.num_heads, query_positions.shape[0], key_positions.shape[0]),
            dtype=self.compute_dtype,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "initializer_stddev": self.initializer_stddev,
        }


@register
class T5Attention(keras.layers.Layer):
    """T5 multi-head attention: no 1/√d scaling, additive bias, optional cache.

    The same layer serves the full-sequence pass (training, encoder) and
    cached decoding, so the two cannot drift apart. Keys and values are kept
    per head, `(batch, heads, len, key_value_dim)`, so that both products of
    the attention are batched matrix products that read a cache without
    copying it; a read-only (cross-attention) cache holds its keys already
    transposed, `(batch, heads, key_value_dim, len)`. Whole sequences without
    a cache (the encoder) go through the backend's attention kernel
    (`backend.dot_product_attention`), except in training with attention
    dropout, which needs the weights.

    Args:
        num_heads: int. Number of heads.
        key_value_dim: int. Size of each head (`d_kv`).
        dropout_rate: float. Dropout on the attention weights. Defaults to `0.0`.
        initializer_factor: float. Scales the initial standard deviations.

    Call arguments:
        hidden_states: `(batch, q_len, d_model)` queries (and keys/values for
            self-attention).
        key_value_states: optional `(batch, k_len, d_model)` for cross-attention.
        attention_bias: additive bias broadcastable to
            `(batch, heads, q_len, k_len)`: position bias plus `MASK_BIAS` at
            masked keys; or a tuple of such terms, summed (see
            `sum_bias_terms`).
        cache: optional pair `(keys, values)`. Without `cache_index` it is
            read-only (cached cross-attention, from `project_key_value(states,
            transpose_keys=True)`): keys `(cache_batch, heads, key_value_dim,
            k_len)`, values `(cache_batch, heads, k_len, key_value_dim)`. With
            `cache_index` (cached self-attention) both are `(cache_batch, heads,
            k_len, key_value_dim)` and the new keys/values of `hidden_states`
            are written at `cache_index` first (on torch in place, see
            `backend.update_cache`).
            `cache_batch` may divide `batch`: each cache row then serves
            `batch // cache_batch` consecutive query rows (samples of a series
            share their encoder states).
        cache_index: optional int scalar, where to write in the cache.
        attended_length: optional Python int. With a cache, attend only to its
            first `attended_length` positions (`attention_bias` then covers
            those). `ChronosT5.decode_step` passes none: the whole cache is
            contiguous and read in place, where a slice of it is strided
            (copied by torch's bfloat16 products), so it attends to all of it
            and masks the unwritten part.
        projection: optional `(d_model, 3 · heads · key_value_dim)`, the query,
            key and value kernels side by side, for cached self-attention
            (`cache_index` given): one product instead of three. A decoding
            constant (`ChronosT5.decoding_constants`).

    Returns:
        `(outputs, (keys, values))`: `(batch, q_len, d_model)` and the keys and
        values attended to, in the layout of `cache` (for a self-attention
        cache, the whole updated cache; without a cache, keys untransposed).

    Example:

    >>> import numpy as np
    >>> attention = T5Attention(num_heads=2, key_value_dim=4)
    >>> out, (keys, values) = attention(np.ones((1, 3, 8), "float32"))
    >>> tuple(out.shape), tuple(keys.shape), tuple(values.shape)
    ((1, 3, 8), (1, 2, 3, 4), (1, 2, 3, 4))
    """

    def __init__(
        self,
        num_heads: int,
        key_value_dim: int,
        dropout_rate: float = 0.0,
        initializer_factor: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_value_dim = key_value_dim
        self.dropout_rate = dropout_rate
        self.initializer_factor = initializer_factor
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, hidden_states_shape, key_value_states_shape=None):
        d_model = hidden_states_shape[-1]
        inner = self.num_heads * self.key_value_dim
        factor = self.initializer_factor

        def dense(name, units, stddev):
            layer = T5Dense(
                units,
                use_bias=False,
                kernel_initializer=normal_initializer(stddev),
                dtype=self.dtype_policy,
                name=name,
            )
            return layer

        # HF `_init_weights` (Mesh TF): q ~ (d_model·d_kv)^-0.5, k/v ~ d_model^-0.5,
        # o ~ (heads·d_kv)^-0.5, all times the initializer factor.
        self.query = dense("query", inner, factor * (d_model * self.key_value_dim) ** -0.5)
        self.key = dense("key", inner, factor * d_model**-0.5)
        self.value = dense("value", inner, factor * d_model**-0.5)
        self.output_dense = dense("output", d_model, factor * inner**-0.5)
        self.query.build((None, None, d_model))
        self.key.build((None, None, d_model))
        self.value.build((None, None, d_model))
        self.output_dense.build((None, None, inner))

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

    def call(
        self,
        hidden_states,
        key_value_states=None,
        attention_bias=None,
        cache=None,
        cache_index=None,
        attended_length=None,
        projection=None,
        training=False,
    ):
        batch, q_len = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        if cache is not None and q_len == 1 and not training and attention_bias is not None:
            decoded = self._decoding_call(
                hidden_states, attention_bias, cache, cache_index, attended_length, projection
            )
            if decoded is not None:
                return decoded
        # Training with the backend's dropout (torch): one fused function from
        # the scores to the context, which takes the bias terms unsummed.
        fused = cache is None and self.dropout.uses_backend_dropout(training)
        if isinstance(attention_bias, (tuple, list)):
            bias_terms = tuple(attention_bias)
            if not fused:
                attention_bias = sum_bias_terms(bias_terms)
        else:
            bias_terms = () if attention_bias is None else (attention_bias,)
        if cache is None and not (training and self.dropout_rate > 0):
            # Whole sequences (the encoder; training without dropout): the
            # backend's attention kernel, which never holds the scores.
            source = hidden_states if key_value_states is None else key_value_states
            keys, values = self.project_key_value(source)
            query = ops.reshape(
                invoke(self.query, hidden_states),
                (batch, q_len, self.num_heads, self.key_value_dim),
            )
            query = ops.transpose(query, (0, 2, 1, 3))  # (batch, heads, q_len, d_kv)
            if attention_bias is None:
                attention_bias = ops.zeros((1, 1, 1, 1), query.dtype)
            attention_bias = cast_bias(attention_bias, query.dtype)
            context = backend.dot_product_attention(query, keys, values, attention_bias)
            return self._output(context, batch, q_len), (keys, values)
        query = None
        if cache is not None and cache_index is None:
            keys, values = cache  # read-only: keys already (batch, heads, d_kv, k_len)
            attended_keys, attended_values = keys, values
        else:
            if cache is None:  # training with dropout on the attention weights
                source = hidden_states if key_value_states is None else key_value_states
                keys, values = self.project_key_value(source)
            else:
                if projection is not None:  # one product for queries, keys and values
                    projected = backend.matmul(hidden_states, projection)
                    if q_len == 1:  # the per-head layout is a reshape (a view on torch)
                        projected = ops.reshape(
                            projected, (batch, 3, self.num_heads, 1, self.key_value_dim)
                        )
                    else:
                        projected = ops.reshape(
                            projected, (batch, q_len, 3, self.num_heads, self.key_value_dim)
                        )
                        projected = ops.transpose(projected, (0, 2, 3, 1, 4))
                    # (batch, 3, heads, q_len, d_kv)
                    query = projected[:, 0]
                    new_keys, new_values = projected[:, 1], projected[:, 2]
                else:
                    new_keys, new_values = self.project_key_value(hidden_states)
                keys = backend.update_cache(cache[0], new_keys, cache_index, axis=2)
                values = backend.update_cache(cache[1], new_values, cache_index, axis=2)
            attended_keys, attended_values = keys, values
            if cache is not None and attended_length is not None:
                attended_keys = keys[:, :, :attended_length]
                attended_values = values[:, :, :attended_length]
            # A transposed view: no copy on torch, folded into the product by XLA.
            attended_keys = ops.swapaxes(attended_keys, 2, 3)  # (batch, heads, d_kv, k_len)

        kv_batch = ops.shape(values)[0]
        if query is None:
            group = batch // kv_batch
            # Rows sharing one cache row are folded into its query length.
            query = ops.reshape(
                invoke(self.query, hidden_states),
                (kv_batch, group * q_len, self.num_heads, self.key_value_dim),
            )
            query = ops.transpose(query, (0, 2, 1, 3))  # (kv_batch, heads, group·q_len, d_kv)
        if fused:
            terms = tuple(cast_bias(term, query.dtype) for term in bias_terms)
            context = backend.attention_with_dropout(
                query, attended_keys, attended_values, terms, self.dropout.rate
            )
            return self._output(context, batch, q_len), (keys, values)
        scores = backend.matmul(query, attended_keys)  # (kv_batch, heads, group·q_len, k_len)
        if attention_bias is not None:
            scores = scores + cast_bias(attention_bias, scores.dtype)
        # Softmax accumulated in float32 (half-precision sums lose the small
        # differences between large logits), result in the compute dtype.
        weights = backend.softmax(scores)
        weights = invoke(self.dropout, weights, training=training)
        context = backend.matmul(weights, attended_values)  # (kv_batch, heads, group·q_len, d_kv)
        return self._output(context, batch, q_len), (keys, values)

    def _decoding_call(
        self, hidden_states, attention_bias, cache, cache_index, attended_length, projection
    ):
        """One decoding step (one query per row, inference) of a cached
        attention, as one backend call (`backend.decoding_self_attention`,
        `backend.decoding_cross_attention`); `None` where those do not apply
        (a self-attention cache without the fused `projection`)."""
        attention_bias = cast_bias(attention_bias, hidden_states.dtype)
        if cache_index is None:  # cross-attention over precomputed keys/values
            outputs = backend.decoding_cross_attention(
                hidden_states,
                self.query.kernel,
                self.output_dense.kernel,
                cache,
                attention_bias,
                self.num_heads,
            )
            return outputs, cache
        if projection is None:
            return None
        return backend.decoding_self_attention(
            hidden_states,
            projection,
            self.output_dense.kernel,
            cache,
            cache_index,
            attended_length,
            attention_bias,
            self.num_heads,
        )

    def _output(self, context, batch, q_len):
        """The output projection of the per-head context `(kv_batch, heads,
        group·q_len, d_kv)`: `(batch, q_len, d_model)`."""
        if ops.shape(context)[2] != 1:  # one query per row: the transpose moves nothing
            context = ops.transpose(context, (0, 2, 1, 3))  # (kv_batch, group·q_len, heads, d_kv)
        context = ops.reshape(context, (batch, q_len, self.num_heads * self.key_value_dim))
        return invoke(self.output_dense, context)

    def compute_output_spec(
        self, hidden_states, key_value_states=None, attention_bias=None, cache=None, **kwargs
    ):
        batch, q_len, d_model = hidden_states.shape
        source = hidden_states if key_value_states is None else key_value_states
        k_len = cache[1].shape[2] if cache is not None else source.shape[1]
        kv_batch = cache[1].shape[0] if cache is not None else batch
        heads, d_kv = self.num_heads, self.key_value_dim
        read_only = cache is not None and kwargs.get("cache_index") is None
        key_shape = (kv_batch, heads, d_kv, k_len) if read_only else (kv_batch, heads, k_len, d_kv)
        return (
            keras.KerasTensor((batch, q_len, d_model), dtype=self.compute_dtype),
            (
                keras.KerasTensor(key_shape, dtype=self.compute_dtype),
                keras.KerasTensor((kv_batch, heads, k_len, d_kv), dtype=self.compute_dtype),
            ),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "dropout_rate": self.dropout_rate,
            "initializer_factor": self.initializer_factor,
        }


FEED_FORWARD_PROJECTIONS = ("relu", "gated-relu", "gelu", "gated-gelu")


@register
class T5FeedForward(keras.layers.Layer):
    """T5 feed-forward: `wo(act(wi x))`, or gated `wo(act(wi_0 x) · wi_1 x)`.

    Args:
        intermediate_dim: int. Hidden size `d_ff`.
        feed_forward_proj: str. One of `"relu"`, `"gated-relu"`, `"gelu"`,
            `"gated-gelu"` (transformers' names; the gated gelu is the tanh
            approximation, `gelu_new`). Defaults to `"relu"`.
        dropout_rate: float. Dropout on the hidden activations.
        initializer_factor: float. Scales the initial standard deviations.

    Example:

    >>> import numpy as np
    >>> ffn = T5FeedForward(intermediate_dim=16, feed_forward_proj="gated-gelu")
    >>> tuple(ffn(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 8)
    """

    def __init__(
        self,
        intermediate_dim: int,
        feed_forward_proj: str = "relu",
        dropout_rate: float = 0.0,
        initializer_factor: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if feed_forward_proj not in FEED_FORWARD_PROJECTIONS:
            raise ValueError(
                f"`feed_forward_proj` must be one of {FEED_FORWARD_PROJECTIONS}. "
                f"Received: feed_forward_proj={feed_forward_proj!r}"
            )
        self.intermediate_dim = intermediate_dim
        self.feed_forward_proj = feed_forward_proj
        self.dropout_rate = dropout_rate
        self.initializer_factor = initializer_factor
        self.is_gated = feed_forward_proj.startswith("gated-")
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        d_model = input_shape[-1]
        factor = self.initializer_factor

        def dense(name, units, fan_in):
            # HF `_init_weights`: wi ~ d_model^-0.5, wo ~ d_ff^-0.5, times the factor.
            layer = T5Dense(
                units,
                use_bias=False,
                kernel_initializer=normal_initializer(factor * fan_in**-0.5),
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build((None, None, fan_in))
            return layer

        if self.is_gated:
            self.wi_0 = dense("wi_0", self.intermediate_dim, d_model)
            self.wi_1 = dense("wi_1", self.intermediate_dim, d_model)
        else:
            self.wi = dense("wi", self.intermediate_dim, d_model)
        self.wo = dense("wo", d_model, self.intermediate_dim)

    def activation(self, x):
        if self.feed_forward_proj.endswith("relu"):
            return ops.relu(x)
        return ops.gelu(x, approximate=self.is_gated)

    def call(self, inputs, training=False):
        if self.is_gated:
            hidden = self.activation(invoke(self.wi_0, inputs)) * invoke(self.wi_1, inputs)
        else:
            hidden = self.activation(invoke(self.wi, inputs))
        return invoke(self.wo, invoke(self.dropout, hidden, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "feed_forward_proj": self.feed_forward_proj,
            "dropout_rate": self.dropout_rate,
            "initializer_factor": self.initializer_factor,
        }


@register
class T5Block(keras.layers.Layer):
    """One pre-norm T5 block: self-attention, [cross-attention,] feed-forward.

    Args:
        num_heads: int. Attention heads.
        key_value_dim: int. Size of each head.
        intermediate_dim: int. Feed-forward hidden size.
        is_decoder: bool. Adds cross-attention over the encoder states.
        feed_forward_proj: str. See `T5FeedForward`.
        dropout_rate: float. Dropout after each sub-layer.
        layer_norm_epsilon: float. Epsilon of the layer norms.
        initializer_factor: float. Scales the initial standard deviations.

    Call arguments:
        hidden_states: `(batch, len, d_model)`.
        self_attention_bias: position bias (+ mask) for self-attention.
        encoder_states: `(batch, enc_len, d_model)`, decoder only (or `None`
            when `cross_attention_cache` is given).
        cross_attention_bias: mask bias over the encoder positions.
        self_attention_cache, cross_attention_cache, cache_index: see
            `T5Attention` (each cache a `(keys, values)` pair).
        attended_length: `attended_length` of the cached self-attention, see
            `T5Attention`.
        self_attention_projection: the self-attention's `projection`, see
            `T5Attention`.

    Returns:
        Decoder blocks: `(hidden_states, self_attention_key_values,
        cross_attention_key_values)`; encoder blocks (no cross-attention):
        `(hidden_states, self_attention_key_values)`. Key/values are
        `(keys, values)` pairs in `T5Attention`'s cache layout.

    Example:

    >>> import numpy as np
    >>> block = T5Block(num_heads=2, key_value_dim=4, intermediate_dim=16)
    >>> hidden, _ = block(np.ones((1, 3, 8), "float32"))
    >>> tuple(hidden.shape)
    (1, 3, 8)
    """

    def __init__(
        self,
        num_heads: int,
        key_value_dim: int,
        intermediate_dim: int,
        is_decoder: bool = False,
        feed_forward_proj: str = "relu",
        dropout_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        initializer_factor: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_value_dim = key_value_dim
        self.intermediate_dim = intermediate_dim
        self.is_decoder = is_decoder
        self.feed_forward_proj = feed_forward_proj
        self.dropout_rate = dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_factor = initializer_factor

        def norm(name):
            return T5LayerNorm(layer_norm_epsilon, dtype=self.dtype_policy, name=name)

        def attention(name):
            return T5Attention(
                num_heads,
                key_value_dim,
                dropout_rate=dropout_rate,
                initializer_factor=initializer_factor,
                dtype=self.dtype_policy,
                name=name,
            )

        self.self_attention_norm = norm("self_attention_norm")
        self.self_attention = attention("self_attention")
        if is_decoder:
            self.cross_attention_norm = norm("cross_attention_norm")
            self.cross_attention = attention("cross_attention")
        self.feed_forward_norm = norm("feed_forward_norm")
        self.feed_forward = T5FeedForward(
            intermediate_dim,
            feed_forward_proj,
            dropout_rate=dropout_rate,
            initializer_factor=initializer_factor,
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, hidden_states_shape, *args, **kwargs):
        shape = (None, None, hidden_states_shape[-1])
        for layer in (self.self_attention_norm, self.feed_forward_norm, self.feed_forward):
            layer.build(shape)
        self.self_attention.build(shape)
        if self.is_decoder:
            self.cross_attention_norm.build(shape)
            self.cross_attention.build(shape, shape)

    def call(
        self,
        hidden_states,
        self_attention_bias=None,
        encoder_states=None,
        cross_attention_bias=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_index=None,
        attended_length=None,
        self_attention_projection=None,
        training=False,
    ):
        attended, self_key_values = invoke(
            self.self_attention,
            invoke(self.self_attention_norm, hidden_states),
            attention_bias=self_attention_bias,
            cache=self_attention_cache,
            cache_index=cache_index,
            attended_length=attended_length,
            projection=self_attention_projection,
            training=training,
        )
        hidden_states = hidden_states + invoke(self.dropout, attended, training=training)
        if self.is_decoder:
            attended, cross_key_values = invoke(
                self.cross_attention,
                invoke(self.cross_attention_norm, hidden_states),
                key_value_states=encoder_states,
                attention_bias=cross_attention_bias,
                cache=cross_attention_cache,
                training=training,
            )
            hidden_states = hidden_states + invoke(self.dropout, attended, training=training)
        transformed = invoke(
            self.feed_forward, invoke(self.feed_forward_norm, hidden_states), training=training
        )
        hidden_states = hidden_states + invoke(self.dropout, transformed, training=training)
        if self.is_decoder:
            return hidden_states, self_key_values, cross_key_values
        return hidden_states, self_key_values

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "intermediate_dim": self.intermediate_dim,
            "is_decoder": self.is_decoder,
            "feed_forward_proj": self.feed_forward_proj,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_factor": self.initializer_factor,
        }
