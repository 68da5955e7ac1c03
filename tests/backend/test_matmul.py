"""`backend.matmul` agrees with `keras.ops.matmul`, for variables, NumPy and
integer operands (its shortcuts and its fallback)."""

import keras
import numpy as np
from keras import ops

from chronos_moe import backend


def test_matmul_shortcut_and_fallbacks_agree_with_keras_ops():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3, 8)).astype("float32")
    kernel = keras.Variable(rng.normal(size=(8, 5)).astype("float32"))
    expected = a @ ops.convert_to_numpy(kernel)
    out = backend.matmul(ops.convert_to_tensor(a), kernel)  # variable operand
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    # int operands and numpy inputs go through keras.ops.matmul
    ints = backend.matmul(np.ones((2, 3), "int32"), np.ones((3, 4), "int32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(ints), np.full((2, 4), 3))
