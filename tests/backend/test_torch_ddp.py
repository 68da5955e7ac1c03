"""The torch data-parallel hooks in one process (`chronos_moe.backend.torch_ddp`):
every hook is the identity. Two processes are tested end to end in
`tests/distribution/test_torch_ddp.py`."""

from __future__ import annotations

import doctest

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="torch DDP hooks (JAX: the identity, in backend/jax_processes.py)",
)


def test_docstring_examples_run():
    from chronos_moe.backend import torch_ddp

    result = doctest.testmod(torch_ddp, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and result.failed == 0


def test_one_process_changes_no_training_step():
    from chronos_moe import ChronosT5, backend

    model = ChronosT5.from_preset(
        "tiny", vocab_size=32, num_layers=1, d_model=8, d_ff=16, num_heads=2, d_kv=4
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    train_step, apply = model.train_step, model.optimizer.apply
    backend.data_parallel(model)
    assert model.train_step == train_step and model.optimizer.apply == apply
    assert backend.process_index() == 0 and backend.process_count() == 1
    assert backend.all_objects({"a": 1}) == [{"a": 1}]
    assert backend.any_process(True) and not backend.any_process(False)
    x = keras.ops.convert_to_tensor(np.arange(3.0))
    assert backend.global_sum(x) is x
