"""The one module that knows which Keras backend is active.

Everything else in chronos-moe is written with `keras.ops`. This module

* holds the backend chosen by `chronos_moe.backend_choice` (at package import,
  before Keras is imported) as ``BACKEND``,
* reports the backend and device (`backend_info`),
* holds the little glue that cannot be expressed with `keras.ops` (or not
  fast enough): compiling a stateless function over a model's variables,
  drawing random numbers inside a compiled loop, writing into a decoding cache
  without copying it, and the k-th largest logit for top-k sampling.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any

from chronos_moe.backend_choice import SUPPORTED_BACKENDS, select_backend  # noqa: F401

BACKEND = select_backend()

import keras  # noqa: E402  (the backend must be chosen first)


def backend_info() -> dict[str, str]:
    """Returns the active Keras backend and the device it computes on.

    Example:

    >>> import chronos_moe
    >>> info = chronos_moe.backend_info()
    >>> info["backend"] in ("torch", "jax")
    True
    """
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
        version = torch.__version__
    else:
        import jax

        first = jax.devices()[0]
        device = f"{first.platform} ({first.device_kind})"
        version = jax.__version__
    return {
        "backend": BACKEND,
        "device": device,
        "backend_version": version,
        "keras_version": keras.__version__,
    }


def compile_stateless(model: keras.Layer, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compiles ``fn(*args)``, a pure function of its tensor arguments and the
    variables of ``model``, for repeated inference calls.

    On JAX the function is `jax.jit`-compiled with the variable values passed as
    arguments (so new weights never trigger a recompile and are never baked in as
    constants); the returned callable reads the current values at each call. On
    torch the function runs eagerly without autograd bookkeeping.
    """
    if BACKEND == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(
                state_mapping=list(zip(model.variables, values, strict=True))
            ):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in model.variables], *args)

    import torch

    def eager(*args):
        with torch.no_grad():
            return fn(*args)

    return eager


def uniform_noise(seed: Any, step: Any, shape: tuple[int, ...]) -> Any:
    """Draws float32 uniforms in [0, 1) for decoding step ``step``.

    Deterministic in ``(seed, step)`` and usable inside a compiled loop, where
    ``seed`` and ``step`` are scalar integer tensors (Keras' seed generators
    cannot be advanced inside a traced JAX loop).
    """
    if BACKEND == "jax":
        import jax

        key = jax.random.fold_in(jax.random.key(seed), step)
        return jax.random.uniform(key, shape, dtype="float32")
    import torch

    generator = torch.Generator(device=keras.ops.convert_to_tensor(0).device)
    generator.manual_seed(int(seed) * 1_000_003 + int(step))
    return torch.rand(shape, generator=generator, device=generator.device)


def update_cache(cache: Any, update: Any, index: Any, axis: int) -> Any:
    """Writes ``update`` into ``cache`` at ``index`` along ``axis``; returns the
    updated cache.

    `ops.slice_update` would copy the whole cache on torch for every write (it
    clones its input): for a decoding cache that is a copy per layer and step,
    most of the decoding time. Here

    * torch: the write happens in place (``cache.narrow(...).copy_(update)``,
      without autograd) and ``cache`` itself is returned. The caller must not
      need the old contents: a decoding cache is only read after it is written.
    * JAX: `jax.lax.dynamic_update_slice_in_dim`, functional as JAX requires;
      inside `jit` (and a compiled loop carrying the cache) XLA performs it in
      place.

    Args:
        cache: tensor to write into.
        update: tensor of the cache's shape except along ``axis``.
        index: int (Python or scalar tensor, traced on JAX), the start position
            along ``axis``.
        axis: int, the axis written along.

    Example:

    >>> import numpy as np
    >>> cache = keras.ops.zeros((2, 4))
    >>> cache = update_cache(cache, keras.ops.ones((2, 1)), 2, axis=1)
    >>> keras.ops.convert_to_numpy(cache).tolist()
    [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    """
    if BACKEND == "jax":
        import jax

        update = jax.numpy.asarray(update, dtype=cache.dtype)
        return jax.lax.dynamic_update_slice_in_dim(cache, update, index, axis)
    import torch

    update = keras.ops.convert_to_tensor(update, dtype=cache.dtype)
    with torch.no_grad():
        cache.narrow(axis, int(index), update.shape[axis]).copy_(update)
    return cache


def contiguous(tensor: Any) -> Any:
    """``tensor`` laid out in memory in its own axis order.

    On torch a transpose is a strided view, and every batched product that
    reads it copies it again; a cache that is read at every decoding step is
    therefore copied once, here. JAX arrays are always laid out: identity.
    """
    if BACKEND == "torch":
        return tensor.contiguous()
    return tensor


def dot_product_attention(query: Any, keys: Any, values: Any, bias: Any) -> Any:
    """T5's attention product ``softmax(query · keysᵀ + bias) · values``, without
    the 1/√d scaling, by the backend's attention kernel.

    * torch: `torch.nn.functional.scaled_dot_product_attention` with
      ``scale=1``. Its CPU kernel works block by block and never holds the
      ``(q_len, k_len)`` scores: for the encoder's 513 × 513 per head it is
      about 3× faster than the matrix products and softmax written out.
    * JAX: `jax.nn.dot_product_attention` (XLA's own fusion of the same
      products; softmax in float32).

    Args:
        query: `(batch, heads, q_len, d)`.
        keys, values: `(batch, heads, k_len, d)`.
        bias: additive, broadcastable to `(batch, heads, q_len, k_len)`.

    Returns:
        `(batch, heads, q_len, d)`.
    """
    if BACKEND == "jax":
        import jax

        def swap(x):  # (batch, len, heads, d), the layout jax.nn expects
            return jax.numpy.swapaxes(x, 1, 2)

        bias = jax.numpy.asarray(bias, dtype=query.dtype)
        context = jax.nn.dot_product_attention(
            swap(query), swap(keys), swap(values), bias=bias, scale=1.0
        )
        return swap(context)
    import torch

    bias = keras.ops.convert_to_tensor(bias, dtype=query.dtype)
    return torch.nn.functional.scaled_dot_product_attention(
        query, keys, values, attn_mask=bias, scale=1.0
    )


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` (`keras.ops.matmul` semantics) for the model's dense layers
    and attention products.

    * JAX with bfloat16/float16 operands: the products (forward and both
      gradients) accumulate in float32 and round once to the operands' dtype.
      XLA:CPU runs a bfloat16 dot with float32 output about 2× faster than one
      with bfloat16 output (measured here: 97 against 49 GFLOP/s per core), and
      the float32 sums are also the more accurate ones. `b` is a 2-D kernel or
      has `a`'s batch dimensions; anything else uses `keras.ops.matmul`.
    * torch (whose bfloat16 kernels already accumulate in float32): ``a @ b``
      directly when both are floating tensors of one dtype, sparing
      `keras.ops`' conversions on the ~50 small products of each decoding
      step; otherwise `keras.ops.matmul`.
    * JAX float32: `keras.ops.matmul`.
    """
    if BACKEND == "jax":
        # A variable becomes its value, cast to the compute dtype under autocast.
        a, b = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
        dtype = keras.backend.standardize_dtype(a.dtype)
        b_dtype = keras.backend.standardize_dtype(b.dtype)
        if dtype in ("bfloat16", "float16") and b_dtype == dtype:
            if len(b.shape) == 2 or tuple(a.shape[:-2]) == tuple(b.shape[:-2]):
                return _jax_matmul_float32_accumulation()(a, b)
        return keras.ops.matmul(a, b)
    tensors = _torch_floating_tensors(a, b)
    if tensors is not None:
        return tensors[0] @ tensors[1]  # same dtype: keras.ops.matmul's casts are no-ops
    return keras.ops.matmul(a, b)


def _torch_floating_tensors(*values: Any) -> tuple[Any, ...] | None:
    """``values`` as torch tensors (a variable read as its value, which honours
    Keras' autocast scope) when all are floating tensors of one dtype, else
    `None`. Lets the hot paths of eager decoding call torch directly instead of
    going through `keras.ops`' argument conversion, about 10–20 µs a call.
    """
    import torch

    tensors = []
    for value in values:
        if isinstance(value, keras.Variable):
            value = value.value
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return None
        if tensors and (value.dtype != tensors[0].dtype or value.device != tensors[0].device):
            return None
        tensors.append(value)
    return tuple(tensors)


def rms_norm(inputs: Any, scale: Any, epsilon: float, compute_dtype: str) -> Any:
    """T5's layer norm: ``scale · x / √(mean(x²) + epsilon)`` over the last
    axis, the mean square in float32, the normalised ``x`` cast to
    ``compute_dtype`` before the scale multiplies it.

    * torch with float32 inputs and scale: one
      `torch.nn.functional.rms_norm` (the same formula in one kernel, where
      `keras.ops` take eight ops and casts; a decoding step of
      chronos-t5-tiny has 13 layer norms).
    * Otherwise (JAX, where XLA fuses the ops; half precision): `keras.ops`.
    """
    if BACKEND == "torch" and compute_dtype == "float32":
        import torch

        tensors = _torch_floating_tensors(inputs, scale)
        if tensors is not None and tensors[0].dtype == torch.float32:
            x, weight = tensors
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, epsilon)
    ops = keras.ops
    x = ops.cast(inputs, "float32")
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    x = x * ops.rsqrt(variance + epsilon)
    return scale * ops.cast(x, compute_dtype)


@functools.cache
def _jax_matmul_float32_accumulation():
    import jax
    import jax.numpy as jnp

    def product(a, b):
        return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)

    @jax.custom_vjp
    def matmul(a, b):
        return product(a, b)

    def forward(a, b):
        return product(a, b), (a, b)

    def backward(residuals, grad):
        a, b = residuals
        grad = grad.astype(a.dtype)
        grad_a = product(grad, jnp.swapaxes(b, -1, -2))
        if b.ndim == 2:  # a kernel shared by every row: sum over all of a's rows
            rows_a = a.reshape(-1, a.shape[-1])
            grad_b = product(rows_a.T, grad.reshape(-1, grad.shape[-1]))
        else:
            grad_b = product(jnp.swapaxes(a, -1, -2), grad)
        return grad_a, grad_b

    matmul.defvjp(forward, backward)
    return matmul


def softmax(scores: Any) -> Any:
    """Softmax over the last axis, accumulated in float32, returned in the
    dtype of ``scores``.

    Half-precision exponentials summed over hundreds of keys lose the small
    differences between large logits, so the sums must be float32; writing
    that as cast → softmax → cast costs two extra passes (and two more in the
    backward pass) over the largest tensor of the step, the attention scores.

    * torch: `torch.softmax` on a bfloat16/float16 tensor already accumulates
      in float32 (its CPU and CUDA kernels use the float32 "opmath" type), so
      it is called on the scores as they are.
    * JAX: cast, softmax, cast back; XLA fuses the casts into the softmax loop.
    """
    if BACKEND == "torch":
        import torch

        scores = keras.ops.convert_to_tensor(scores)
        return torch.softmax(scores, dim=-1)
    dtype = keras.backend.standardize_dtype(scores.dtype)
    return keras.ops.cast(keras.ops.softmax(keras.ops.cast(scores, "float32"), axis=-1), dtype)


def concrete_int(value: Any) -> int | None:
    """``value`` as a Python int when it is known at this point, else `None`.

    A Python int or an eager tensor (torch; JAX outside `jit`) has a value; a
    traced JAX value does not. Lets eager decoding work on only the written
    part of a fixed-size cache while compiled decoding keeps static shapes.

    Example:

    >>> concrete_int(3), concrete_int(keras.ops.convert_to_tensor(4))
    (3, 4)
    """
    if isinstance(value, int):
        return value
    if BACKEND == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            return None
    return int(value)


def cheap_top_k() -> bool:
    """Whether `keras.ops.top_k` selects the k largest of a row without sorting
    the whole row: torch (`torch.topk`, a partial selection). XLA:CPU sorts
    whole rows for `lax.top_k` (see `kth_largest`), so on JAX decoding keeps
    the full-vocabulary sampling, whose passes XLA fuses.

    Example:

    >>> cheap_top_k() == (keras.config.backend() == "torch")
    True
    """
    return BACKEND == "torch"


def kth_largest(values: Any, k: int) -> Any:
    """The ``k``-th largest entry of each row of a float32 ``(rows, n)`` tensor,
    as ``(rows, 1)``; exact, with repeated values counted as often as they occur
    (as `torch.topk(...).values[:, -1]`).

    * torch: `torch.topk`.
    * JAX: XLA:CPU sorts whole rows for `lax.top_k` (for 640 × 4096 logits that
      was half of the decoding time). Instead, bisection over the float32 bit
      patterns: a float maps to a uint32 key that orders like the float, and 32
      halvings of the key range, each counting the entries ``>=`` the midpoint,
      find the largest key that ``k`` entries reach, i.e. the k-th largest
      value. Each halving is one fused pass over the row.

    Example:

    >>> import numpy as np
    >>> x = keras.ops.convert_to_tensor(np.array([[3.0, -1.0, 3.0, 2.0]], "float32"))
    >>> keras.ops.convert_to_numpy(kth_largest(x, 2)).tolist()
    [[3.0]]
    """
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        values = jnp.asarray(values, dtype="float32")
        # -0.0 and +0.0 compare equal as floats, so give them one key.
        values = jnp.where(values == 0, jnp.float32(0), values)
        bits = jax.lax.bitcast_convert_type(values, jnp.uint32)
        sign = jnp.uint32(0x80000000)
        # Non-negative floats: set the sign bit; negative ones: flip all bits.
        keys = jnp.where(bits >= sign, ~bits, bits | sign)
        low = jnp.min(keys, axis=-1, keepdims=True)  # k entries reach it (k <= n)
        high = jnp.max(keys, axis=-1, keepdims=True)

        def halve(_, bounds):
            low, high = bounds
            span = high - low
            middle = low + (span >> 1) + (span & 1)  # rounds up: low < middle when low < high
            reached = jnp.sum(keys >= middle, axis=-1, keepdims=True, dtype="int32") >= k
            return jnp.where(reached, middle, low), jnp.where(reached, high, middle - 1)

        low, _ = jax.lax.fori_loop(0, 32, halve, (low, high))
        bits = jnp.where(low >= sign, low ^ sign, ~low)
        return jax.lax.bitcast_convert_type(bits, jnp.float32)
    import torch

    values = keras.ops.convert_to_tensor(values)
    return torch.topk(values, k, dim=-1).values[:, -1:]


# ---- training: dropout -------------------------------------------------------------

# Dropout masks are drawn with this many random bits per element (torch).
DROPOUT_MASK_BITS = 16


def fast_dropout_available() -> bool:
    """Whether `dropout` has a backend-specific implementation: torch. On JAX,
    Keras' own dropout (drawn from the layer's seed generator, which XLA fuses
    into the surrounding ops) is used instead.

    Example:

    >>> fast_dropout_available() == (keras.config.backend() == "torch")
    True
    """
    return BACKEND == "torch"


def dropout_rate_drawn(rate: float) -> float:
    """The drop probability `dropout` realises for ``rate``: ``rate`` rounded
    to a multiple of 2⁻¹⁶ (each element compares 16 random bits with a
    threshold), e.g. 6554 / 65536 = 0.1000061 for 0.1.

    Example:

    >>> round(dropout_rate_drawn(0.1), 7)
    0.1000061
    """
    levels = 1 << DROPOUT_MASK_BITS
    return min(max(round(rate * levels), 0), levels) / levels


def dropout(inputs: Any, rate: float) -> Any:
    """Training-mode dropout on torch: zeroes each element with probability
    ``rate`` and scales the kept ones by ``1 / (1 - rate)``, drawn from torch's
    global generator (as Keras' unseeded torch dropout; checkpoints save and
    restore that generator for an exact resume).

    `torch.nn.functional.dropout` draws its mask on the CPU with
    `bernoulli_`, one float per element: about a third of a chronos-t5-tiny
    training step. Here the mask takes 16 random bits per element (64-bit
    words from `random_`, split into four lanes, each compared with
    ``round(rate · 2¹⁶)``), about 3× cheaper; the realised rate is
    `dropout_rate_drawn(rate)` (0.1 → 0.1000061), and the kept elements are
    scaled by its complement's inverse, so the expectation stays exact. The
    scale is applied in float32 arithmetic (`torch.nn.functional.dropout`
    multiplies by a bfloat16-rounded 1/0.9 = 1.109 on bfloat16 tensors). The
    backward pass keeps
    only the boolean mask (1 byte per element instead of a float noise
    tensor), and multiplies the gradient by the same mask and scale.

    Args:
        inputs: floating tensor.
        rate: float in [0, 1].

    Returns:
        A tensor like ``inputs``.

    Example:

    >>> import numpy as np
    >>> x = keras.ops.ones((1000,))
    >>> y = keras.ops.convert_to_numpy(dropout(x, 0.5)) if fast_dropout_available() else None
    >>> y is None or set(np.unique(y).tolist()) <= {0.0, 2.0}
    True
    """
    if BACKEND != "torch":
        raise NotImplementedError(
            f"backend.dropout is torch-only (see fast_dropout_available); the backend is "
            f"{BACKEND!r}."
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1]. Received: rate={rate!r}")
    inputs = keras.ops.convert_to_tensor(inputs)
    if rate == 0.0:
        return inputs
    if rate == 1.0:
        return inputs * 0
    return _torch_dropout_function().apply(inputs, rate)


def _torch_drop_mask(shape: Any, rate: float, device: Any) -> Any:
    """A boolean tensor of ``shape``, true with probability
    `dropout_rate_drawn(rate)` per element: 16-bit lanes of 64-bit random
    words (full range, so every lane is uniform) below a threshold."""
    import torch

    count = 1
    for size in shape:
        count *= int(size)
    words = _torch_random_words((count + 3) // 4, device)
    lanes = words.view(torch.int16)[:count].view(shape)
    threshold = round(dropout_rate_drawn(rate) * (1 << DROPOUT_MASK_BITS)) - (1 << 15)
    return lanes < threshold


# Random words per generator when a mask is drawn in parallel (8 MB of words).
_WORDS_PER_DRAW = 1 << 20


def _torch_random_words(count: int, device: Any) -> Any:
    """``count`` random 64-bit words over the full range (so no 16-bit lane
    loses its top bit), determined by torch's global generator.

    A CPU generator fills a tensor sequentially, on one core. A large draw is
    cut into blocks of `_WORDS_PER_DRAW` words, each filled by its own
    generator seeded from the global one, on torch's intra-op threads: the
    words depend on the global generator's state and ``count`` only, not on the
    number of threads (a resumed run draws the same masks on another machine).
    """
    import torch

    words = torch.empty(count, dtype=torch.int64, device=device)
    if words.device.type != "cpu" or count <= _WORDS_PER_DRAW:
        return words.random_(-(2**63), None)
    blocks = words.split(_WORDS_PER_DRAW)
    seeds = torch.randint(0, 2**62, (len(blocks),)).tolist()  # from the global generator

    def fill(index: int) -> None:
        generator = torch.Generator().manual_seed(seeds[index])
        blocks[index].random_(-(2**63), None, generator=generator)

    list(_draw_threads(torch.get_num_threads()).map(fill, range(len(blocks))))
    return words


@functools.cache
def _draw_threads(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="chronos-moe-draw")


@functools.cache
def _torch_dropout_function():
    import torch

    class Dropout(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, rate):
            drop = _torch_drop_mask(inputs.shape, rate, inputs.device)
            ctx.save_for_backward(drop)
            ctx.scale = 1.0 / (1.0 - dropout_rate_drawn(rate))
            return torch.where(drop, 0.0, inputs).mul_(ctx.scale)

        @staticmethod
        def backward(ctx, grad):
            (drop,) = ctx.saved_tensors
            return torch.where(drop, 0.0, grad).mul_(ctx.scale), None

    return Dropout


# ---- training: attention with dropout on its weights -------------------------------


def attention_with_dropout(
    query: Any, keys_transposed: Any, values: Any, bias_terms: tuple[Any, ...], rate: float
) -> Any:
    """T5's training attention on torch: ``dropout(softmax(query · keysᵀ +
    Σ bias_terms)) · values``, dropout as `dropout` (16-bit masks from torch's
    global generator, kept elements scaled by ``1 / (1 - rate)``).

    The autograd graph of the written-out ops makes about ten passes over
    the `(batch, heads, q_len, k_len)` scores per layer and keeps three
    tensors of that size for the backward pass (the weights, the dropped
    weights, the mask). This one function adds the bias terms in place
    (each broadcast; a bias term's gradient is summed over its broadcast
    axes here, so a position bias shared by the batch never gets a
    batch-sized gradient), multiplies the scale into the `(…, d)` context
    instead of the weights, keeps only the weights and a 1-byte mask, and
    recomputes the dropped weights in the backward pass (one pass), whose
    other passes run in place on fresh gradients.

    Args:
        query: `(batch, heads, q_len, d)`.
        keys_transposed: `(batch, heads, d, k_len)`.
        values: `(batch, heads, k_len, d)`.
        bias_terms: additive terms, each broadcastable to `(batch, heads,
            q_len, k_len)`, in the dtype of ``query``.
        rate: dropout rate in [0, 1).

    Returns:
        The context, `(batch, heads, q_len, d)`.
    """
    if BACKEND != "torch":
        raise NotImplementedError(
            f"backend.attention_with_dropout is torch-only (see fast_dropout_available); "
            f"the backend is {BACKEND!r}."
        )
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1). Received: rate={rate!r}")
    query, keys_transposed, values = (
        keras.ops.convert_to_tensor(x) for x in (query, keys_transposed, values)
    )
    terms = tuple(keras.ops.convert_to_tensor(term, dtype=query.dtype) for term in bias_terms)
    return _torch_attention_function().apply(query, keys_transposed, values, rate, *terms)


@functools.cache
def _torch_attention_function():
    import torch

    class AttentionWithDropout(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, keys_transposed, values, rate, *bias_terms):
            scores = torch.matmul(query, keys_transposed)
            for term in bias_terms:
                scores.add_(term)
            # In place where the inputs are no longer needed: a fresh tensor of
            # this size costs more in page faults than the pass itself.
            weights = torch._softmax(scores, -1, False, out=scores)
            drop = _torch_drop_mask(weights.shape, rate, weights.device)
            scale = 1.0 / (1.0 - dropout_rate_drawn(rate))
            context = torch.matmul(torch.where(drop, 0.0, weights), values).mul_(scale)
            ctx.save_for_backward(query, keys_transposed, values, weights, drop)
            ctx.scale = scale
            ctx.bias_shapes = tuple(term.shape for term in bias_terms)
            return context

        @staticmethod
        def backward(ctx, grad):
            query, keys_transposed, values, weights, drop = ctx.saved_tensors
            grad = grad * ctx.scale
            needs = ctx.needs_input_grad
            grad_values, buffer = None, None
            if needs[2]:
                buffer = torch.where(drop, 0.0, weights)  # the dropped weights again
                grad_values = torch.matmul(buffer.transpose(-1, -2), grad)
            # The buffer (where there is one) then holds the weights' gradient and
            # the scores' gradient in turn (a row-wise kernel: in place is safe).
            grad_scores = torch.matmul(grad, values.transpose(-1, -2), out=buffer)
            grad_scores.masked_fill_(drop, 0)
            torch._softmax_backward_data(
                grad_scores, weights, -1, weights.dtype, grad_input=grad_scores
            )
            grad_query = torch.matmul(grad_scores, keys_transposed.transpose(-1, -2))
            grad_keys = torch.matmul(query.transpose(-1, -2), grad_scores)
            grad_bias = [
                grad_scores.sum_to_size(shape) if needs[4 + index] else None
                for index, shape in enumerate(ctx.bias_shapes)
            ]
            return (grad_query, grad_keys, grad_values, None, *grad_bias)

    return AttentionWithDropout


# ---------------------------------------------------------------------------------------
# Cached decoding: one call per attention sub-layer of a decoding step.
#
# Eager torch decoding runs each step op by op, and at 20 rows (one series)
# the ~20 `keras.ops` calls of an attention sub-layer, each with its own
# argument conversion, cost more than the products themselves. These
# functions do a whole sub-layer of one decoding step: in raw torch when all
# operands are floating torch tensors of one dtype and the cache position is
# known (eager decoding), otherwise with `keras.ops` (JAX, where the loop is
# compiled and XLA fuses the ops; traced indices). Both compute the same
# operations in the same order, so the results agree to the last bit on
# torch (`tests/layers/test_decoding_primitives.py`).
# ---------------------------------------------------------------------------------------


def decoding_self_attention(
    hidden: Any,
    projection: Any,
    output_kernel: Any,
    cache: tuple[Any, Any],
    index: Any,
    attended_length: int | None,
    bias: Any,
    num_heads: int,
) -> tuple[Any, tuple[Any, Any]]:
    """T5's cached self-attention for one new position per row (no scaling,
    additive bias, softmax accumulated in float32).

    The query, key and value of ``hidden`` come from one product with
    ``projection``; the key and value are written into the cache at ``index``
    (in place on torch, see `update_cache`); the query attends to the first
    ``attended_length`` cache positions (all when `None`).

    Args:
        hidden: `(batch, 1, d_model)`, the normalised inputs.
        projection: `(d_model, 3 · heads · d_kv)`, query, key and value kernels
            side by side.
        output_kernel: `(heads · d_kv, d_model)`.
        cache: `(keys, values)`, each `(batch, heads, max_length, d_kv)`.
        index: int (Python or scalar tensor), the position written.
        attended_length: Python int or `None`.
        bias: `(1, heads, 1, attended_length or max_length)` in the compute
            dtype, position bias plus causal mask.
        num_heads: int.

    Returns:
        `((batch, 1, d_model), (keys, values))`, the updated cache.

    Example:

    >>> import numpy as np
    >>> ones = keras.ops.ones
    >>> cache = (ones((2, 1, 4, 3)), ones((2, 1, 4, 3)))
    >>> out, (keys, _) = decoding_self_attention(
    ...     ones((2, 1, 5)), ones((5, 9)), ones((3, 5)), cache, 1, 2, ones((1, 1, 1, 2)), 1)
    >>> tuple(out.shape), float(keras.ops.convert_to_numpy(keys)[0, 0, 1, 0])
    ((2, 1, 5), 5.0)
    """
    keys, values = cache
    position = concrete_int(index) if BACKEND == "torch" else None
    tensors = (
        None
        if position is None
        else _torch_floating_tensors(hidden, projection, output_kernel, keys, values, bias)
    )
    if tensors is not None:
        import torch

        hidden, projection, output_kernel, keys, values, bias = tensors
        batch, inner = hidden.shape[0], output_kernel.shape[0]
        length = keys.shape[2] if attended_length is None else attended_length
        with torch.no_grad():
            projected = (hidden @ projection).view(batch, 3, num_heads, 1, inner // num_heads)
            keys[:, :, position : position + 1].copy_(projected[:, 1])
            values[:, :, position : position + 1].copy_(projected[:, 2])
            scores = projected[:, 0] @ keys[:, :, :length].transpose(2, 3) + bias
            context = torch.softmax(scores, dim=-1) @ values[:, :, :length]
            return context.view(batch, 1, inner) @ output_kernel, (keys, values)
    ops = keras.ops
    batch, inner = ops.shape(hidden)[0], ops.shape(output_kernel)[0]
    projected = ops.reshape(
        matmul(hidden, projection), (batch, 3, num_heads, 1, inner // num_heads)
    )
    keys = update_cache(keys, projected[:, 1], index, axis=2)
    values = update_cache(values, projected[:, 2], index, axis=2)
    attended_keys, attended_values = keys, values
    if attended_length is not None:
        attended_keys = keys[:, :, :attended_length]
        attended_values = values[:, :, :attended_length]
    scores = matmul(projected[:, 0], ops.swapaxes(attended_keys, 2, 3))
    scores = scores + ops.cast(bias, scores.dtype)
    context = matmul(softmax(scores), attended_values)  # (batch, heads, 1, d_kv)
    return matmul(ops.reshape(context, (batch, 1, inner)), output_kernel), (keys, values)


def decoding_cross_attention(
    hidden: Any,
    query_kernel: Any,
    output_kernel: Any,
    cache: tuple[Any, Any],
    bias: Any,
    num_heads: int,
) -> Any:
    """T5's cross-attention for one new position per row, over precomputed
    encoder keys and values shared by consecutive rows (the samples of a
    series).

    Args:
        hidden: `(batch, 1, d_model)`, the normalised inputs.
        query_kernel: `(d_model, heads · d_kv)`.
        output_kernel: `(heads · d_kv, d_model)`.
        cache: `(keys, values)`: keys transposed `(kv_batch, heads, d_kv,
            enc_len)`, values `(kv_batch, heads, enc_len, d_kv)`, where
            `kv_batch` divides `batch`: each cache row serves `batch //
            kv_batch` consecutive rows.
        bias: broadcastable to `(kv_batch, heads, 1, enc_len)`, in the compute
            dtype (the padding bias).
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
    keys, values = cache
    tensors = None
    if BACKEND == "torch":
        tensors = _torch_floating_tensors(hidden, query_kernel, output_kernel, keys, values, bias)
    if tensors is not None:
        import torch

        hidden, query_kernel, output_kernel, keys, values, bias = tensors
        batch, kv_batch, inner = hidden.shape[0], keys.shape[0], output_kernel.shape[0]
        with torch.no_grad():
            query = (hidden @ query_kernel).view(kv_batch, batch // kv_batch, num_heads, -1)
            scores = query.transpose(1, 2) @ keys + bias  # (kv_batch, heads, group, enc_len)
            context = torch.softmax(scores, dim=-1) @ values  # (kv_batch, heads, group, d_kv)
            return context.transpose(1, 2).reshape(batch, 1, inner) @ output_kernel
    ops = keras.ops
    batch, kv_batch, inner = ops.shape(hidden)[0], ops.shape(keys)[0], ops.shape(output_kernel)[0]
    group = batch // kv_batch
    query = ops.reshape(
        matmul(hidden, query_kernel), (kv_batch, group, num_heads, inner // num_heads)
    )
    scores = matmul(ops.transpose(query, (0, 2, 1, 3)), keys)
    scores = scores + ops.cast(bias, scores.dtype)
    context = matmul(softmax(scores), values)  # (kv_batch, heads, group, d_kv)
    if group != 1:
        context = ops.transpose(context, (0, 2, 1, 3))
    return matmul(ops.reshape(context, (batch, 1, inner)), output_kernel)


def sample_top_k_candidates(
    logits: Any,
    uniform: Any,
    temperature: Any,
    top_k: int,
    top_p: Any,
    use_top_p: bool,
    banned_token: int,
    width: int,
) -> Any:
    """`generation.sample_top_k`'s draw from the `width` largest logits of
    each row, in raw torch, op for op as there (the same tokens); `None`
    where that function must run instead: on JAX, for tensors that are not
    float32 torch tensors, and when the candidates are incomplete (more
    than `width - top_k - 1` logits tie with the k-th largest), which takes
    the full-vocabulary path. At 20 rows its ~35 `keras.ops` calls cost
    about 1 ms per decoding step; these torch calls a fraction of that.

    Args:
        logits: float32 `(rows, vocab)`.
        uniform: float32 `(rows, 1)` in [0, 1).
        temperature, top_p: float scalars (Python or tensor).
        top_k, use_top_p, banned_token: see `generation.sample_top_k`.
        width: int, the number of candidates, `top_k + margin + 1`.

    Returns:
        int32 token ids `(rows,)`, or `None`.

    Example:

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.1, 0.0, 0.6, 0.3, 0.0, 0.0]], "float32") + 1e-30)
    >>> token = sample_top_k_candidates(keras.ops.convert_to_tensor(logits),
    ...     keras.ops.convert_to_tensor([[0.8]]), 1.0, 2, 1.0, False, 1, 5)
    >>> token is None or int(keras.ops.convert_to_numpy(token)[0]) == 3
    True
    """
    if BACKEND != "torch":
        return None
    import torch

    tensors = _torch_floating_tensors(logits, uniform)
    if tensors is None or tensors[0].dtype != torch.float32:
        return None
    logits, uniform = tensors
    with torch.no_grad():
        raw, indices = torch.topk(logits, width, dim=-1)  # descending
        values = torch.where(indices == banned_token, float("-inf"), raw) / temperature
        ascending = torch.sort(values, dim=-1).values
        kth_largest = ascending[:, width - top_k : width - top_k + 1]
        if not bool(torch.all(raw[:, -1:] / temperature < kth_largest)):
            return None
        threshold = kth_largest
        if use_top_p:
            kept = torch.where(ascending < kth_largest, float("-inf"), ascending)
            cumulative = torch.cumsum(torch.softmax(kept, dim=-1), dim=-1)
            dropped = (cumulative[:, :-1] <= 1.0 - top_p).sum(dim=-1, keepdim=True)
            threshold = torch.take_along_dim(kept, dropped, dim=-1)
        weights = torch.where(values >= threshold, torch.exp(values - ascending[:, -1:]), 0.0)
        order = torch.argsort(indices, dim=-1, stable=True)  # vocabulary order
        weights = torch.take_along_dim(weights, order, dim=-1)
        cumulative = torch.cumsum(weights, dim=-1)
        index = (cumulative <= uniform * cumulative[:, -1:]).sum(dim=-1, keepdim=True)
        positions = torch.arange(width, device=weights.device)[None, :]
        last = torch.where(weights > 0, positions, 0).amax(dim=-1, keepdim=True)
        index = torch.take_along_dim(order, torch.minimum(index, last), dim=-1)
        return torch.take_along_dim(indices, index, dim=-1)[:, 0].to(torch.int32)
