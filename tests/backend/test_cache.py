"""`backend.update_cache` writes in place on torch and stays correct under
`jit` and inside a compiled loop on JAX; `backend.concrete_int` knows a value
only where it is concrete."""

import keras
import numpy as np
from keras import ops

from chronos_moe import backend

BACKEND = keras.config.backend()


def test_update_cache_writes_the_slice_and_nothing_else():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(2, 3, 5, 4)).astype("float32")
    update = rng.normal(size=(2, 3, 1, 4)).astype("float32")
    cache = ops.convert_to_tensor(initial)
    written = backend.update_cache(cache, ops.convert_to_tensor(update), 3, axis=2)
    expected = initial.copy()
    expected[:, :, 3:4] = update
    np.testing.assert_array_equal(ops.convert_to_numpy(written), expected)
    # A tensor index and a wider update along another axis.
    wide = rng.normal(size=(2, 3, 5, 2)).astype("float32")
    index = ops.convert_to_tensor(1, "int32")
    written = backend.update_cache(written, ops.convert_to_tensor(wide), index, axis=3)
    expected[..., 1:3] = wide
    np.testing.assert_array_equal(ops.convert_to_numpy(written), expected)


def test_update_cache_is_in_place_on_torch_and_functional_on_jax():
    cache = ops.zeros((4, 6))
    update = ops.ones((4, 1))
    written = backend.update_cache(cache, update, 2, axis=1)
    if BACKEND == "torch":
        assert written is cache  # no copy of the cache
        assert float(ops.sum(cache)) == 4.0
    else:
        assert float(ops.sum(cache)) == 0.0  # JAX arrays are immutable
    assert float(ops.sum(written)) == 4.0
    np.testing.assert_array_equal(ops.convert_to_numpy(update), np.ones((4, 1)))


def test_update_cache_in_a_compiled_loop():
    """Every step writes its own column, with a traced index under jit on JAX."""
    steps = 7

    def fill(start):
        def body(index, cache):
            value = ops.cast(index, "float32") + start
            column = ops.ones((3, 1)) * value
            return backend.update_cache(cache, column, index, axis=1)

        return ops.fori_loop(0, steps, body, ops.zeros((3, steps)))

    if BACKEND == "jax":
        import jax

        fill = jax.jit(fill)
    filled = ops.convert_to_numpy(fill(ops.convert_to_tensor(10.0)))
    np.testing.assert_array_equal(filled, np.tile(np.arange(steps) + 10.0, (3, 1)))


def test_concrete_int():
    assert backend.concrete_int(5) == 5
    assert backend.concrete_int(ops.convert_to_tensor(6, "int32")) == 6
    if BACKEND == "jax":
        import jax

        seen = []
        jax.jit(lambda x: seen.append(backend.concrete_int(x)) or x)(3)
        assert seen == [None]
