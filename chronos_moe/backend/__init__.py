"""The only package that knows which Keras backend is active.

Everything else in chronos-moe is written with `keras.ops`. The backend was
chosen at package import (`chronos_moe.backend_choice`, before Keras is
imported); this package

* holds that choice as ``BACKEND`` and reports it with the device
  (`backend_info`),
* imports the active backend's module once, `torch.py` or `jax.py`, and hands
  on its functions. Both modules implement the same few: compiled inference
  (`compile_stateless`), random numbers inside a compiled loop
  (`uniform_noise`) and the global random state a checkpoint keeps
  (`global_rng_state`), cache writes (`update_cache`), the model's products and
  softmax (`matmul`, `softmax`, `rms_norm`), dropout, attention over a whole
  sequence (`attention`, training included) and for one decoding step
  (`decoding_self_attention`, `decoding_cross_attention`), and top-k sampling
  (`kth_largest`, `sample_top_k_candidates`), the token-level experts'
  per-expert products (`grouped_matmul`), and whether `keras.distribution`
  runs (`KERAS_DISTRIBUTION`) and whether an array is placed as a layout
  says (`is_laid_out`), and the processes of a data-parallel run
  (`initialize_processes`, `process_index`, `process_count`, `global_sum`,
  `all_objects`, `any_process`,
  `data_parallel`, `broadcast_object`, `barrier`, `shutdown_processes`: torch
  DDP under `torchrun`, see `torch_ddp.py`; on JAX the processes of a
  multi-host run, whose steps need no hooks).

The `keras.ops` reference of each kernel lives once, beside the layer that
uses it (`chronos_moe.layers`, `chronos_moe.generation`); the tests hold every
backend's kernel against it (`tests/backend/`). A new backend-specific line
belongs in `torch.py` or `jax.py`, with the same function in the other.
"""

from __future__ import annotations

from chronos_moe.backend_choice import SUPPORTED_BACKENDS, select_backend

BACKEND = select_backend()

import keras  # noqa: E402  (the backend must be chosen first)

if BACKEND == "torch":
    from chronos_moe.backend import torch as _active
else:
    from chronos_moe.backend import jax as _active


# What torch.py and jax.py both implement (besides `device_and_version`, behind
# `backend_info`), handed on from the active one.
KERNELS = (
    "all_objects",
    "any_process",
    "attention",
    "barrier",
    "broadcast_object",
    "data_parallel",
    "global_sum",
    "initialize_processes",
    "process_count",
    "process_index",
    "shutdown_processes",
    "cheap_top_k",
    "compile_stateless",
    "concrete_int",
    "contiguous",
    "decoding_cross_attention",
    "decoding_self_attention",
    "dropout",
    "dropout_rate_drawn",
    "global_rng_state",
    "grouped_matmul",
    "kth_largest",
    "matmul",
    "rms_norm",
    "sample_top_k_candidates",
    "is_laid_out",
    "set_global_rng_state",
    "softmax",
    "uniform_noise",
    "update_cache",
)
__all__ = [
    "BACKEND",
    "JIT_COMPILE",
    "KERAS_DISTRIBUTION",
    "SUPPORTED_BACKENDS",
    "backend_info",
    *KERNELS,
]

JIT_COMPILE = _active.JIT_COMPILE
KERAS_DISTRIBUTION = _active.KERAS_DISTRIBUTION
all_objects = _active.all_objects
any_process = _active.any_process
attention = _active.attention
barrier = _active.barrier
broadcast_object = _active.broadcast_object
data_parallel = _active.data_parallel
global_sum = _active.global_sum
initialize_processes = _active.initialize_processes
process_count = _active.process_count
process_index = _active.process_index
shutdown_processes = _active.shutdown_processes
cheap_top_k = _active.cheap_top_k
compile_stateless = _active.compile_stateless
concrete_int = _active.concrete_int
contiguous = _active.contiguous
decoding_cross_attention = _active.decoding_cross_attention
decoding_self_attention = _active.decoding_self_attention
dropout = _active.dropout
dropout_rate_drawn = _active.dropout_rate_drawn
global_rng_state = _active.global_rng_state
grouped_matmul = _active.grouped_matmul
is_laid_out = _active.is_laid_out
kth_largest = _active.kth_largest
matmul = _active.matmul
rms_norm = _active.rms_norm
sample_top_k_candidates = _active.sample_top_k_candidates
set_global_rng_state = _active.set_global_rng_state
softmax = _active.softmax
uniform_noise = _active.uniform_noise
update_cache = _active.update_cache


def backend_info() -> dict[str, str]:
    """Returns the active Keras backend and the device it computes on.

    Example:

    >>> import chronos_moe
    >>> info = chronos_moe.backend_info()
    >>> info["backend"] in ("torch", "jax")
    True
    """
    device, version = _active.device_and_version()
    return {
        "backend": BACKEND,
        "device": device,
        "backend_version": version,
        "keras_version": keras.__version__,
    }
