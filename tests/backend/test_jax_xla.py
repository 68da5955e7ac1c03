"""XLA:CPU's YNNPACK fusion sets: the training flag the process carries and the
forecasting programs' own set (`chronos_moe.backend.jax_xla`)."""

import doctest
import os
import re

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.config.backend() != "jax", reason="XLA's flags (the torch suite runs eagerly)"
)


def test_the_examples_in_the_docstrings_hold():
    from chronos_moe.backend import jax_xla

    result = doctest.testmod(jax_xla)
    assert result.attempted >= 8 and result.failed == 0


def test_this_process_carries_the_training_flag():
    from chronos_moe.backend import jax_xla

    assert jax_xla.TRAINING_FUSION_FLAG in os.environ["XLA_FLAGS"].split()


def test_forecasting_programs_are_compiled_with_the_inference_fusions(monkeypatch):
    import jax

    from chronos_moe import ChronosPipeline, ChronosT5
    from chronos_moe.backend import jax_xla

    seen = []
    jit = jax.jit
    monkeypatch.setattr(jax, "jit", lambda fn, **kw: seen.append(kw) or jit(fn, **kw))
    config = {"n_tokens": 64, "context_length": 16, "prediction_length": 4}
    model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, chronos_config=config)
    ChronosPipeline(model).predict(np.arange(10.0)[None], num_samples=2)
    options = [kw["compiler_options"] for kw in seen if "compiler_options" in kw]
    assert options == [{"xla_cpu_experimental_ynn_fusion_type": jax_xla.INFERENCE_FUSIONS}]


def test_the_per_program_fusion_set_changes_what_xla_compiles():
    """XLA reads the option (an unknown or ignored option would leave the
    program as the process flag makes it): a softmax after a product gets more
    YNNPACK fusions with the inference set than under the training flag."""
    import jax
    import jax.numpy as jnp

    from chronos_moe.backend import jax_xla

    def softmax_product(x, w):
        return jax.nn.softmax(x @ w, axis=-1).sum(axis=-1).max()

    x, w = jnp.ones((64, 128)), jnp.ones((128, 128))

    def ynn_fusions(**options):
        text = jax.jit(softmax_product, **options).lower(x, w).compile().as_text()
        return len(re.findall(r"ynn", text))

    options = jax_xla.inference_compiler_options(os.environ["XLA_FLAGS"], "cpu")
    assert ynn_fusions(compiler_options=options) > ynn_fusions()
