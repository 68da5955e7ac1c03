"""JAX's functions for a run of several processes (hosts): joining them, their
index and count, and the small host objects they exchange (imported by
`chronos_moe.backend.jax`, which re-exports them; torch's are in `torch_ddp.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import jax
import keras
import numpy as np

# ---- processes ------------------------------------------------------------------------
# A JAX run of several processes (hosts) starts with `keras.distribution.initialize`,
# after which every process sees all devices (`jax.devices()`) and the mesh spans
# them; each process feeds its own rows of the global batch, and Keras assembles
# the global array (`jax.make_array_from_process_local_data`). A step sees the
# global batch, so torch's data-parallel hooks (`torch_ddp.py`) are the identity
# here; the collectives below carry only small host objects between processes.


_joined = False  # whether `initialize_processes` has started JAX's distributed client


def initialize_processes(cluster: Mapping[str, Any] | None = None) -> bool:
    """Joins the processes of a multi-host run (once, before JAX touches a
    device) when `cluster` (`chronos_moe.validation.cluster_settings`) has
    `num_processes` > 1. Returns whether this process is one of several."""
    global _joined
    if not cluster or cluster["num_processes"] <= 1:
        return False
    if _joined:
        return True
    # CPU devices of several processes reduce through gloo (set before JAX
    # starts); GPUs and TPUs use their own collectives, which this leaves alone.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(
        cluster["coordinator_address"], cluster["num_processes"], cluster["process_id"]
    )
    _joined = True
    return True


def process_index() -> int:
    """This process' index among the processes of the run (0 in one process)."""
    return jax.process_index()


def process_count() -> int:
    """The number of processes training together (1 in one process)."""
    return jax.process_count()


def global_sum(x: Any) -> Any:
    """`x`: a JAX step sees the global batch (`keras.distribution` splits it)."""
    return x


def data_parallel(model: keras.Model) -> None:
    """Nothing to install: `keras.distribution` handles the devices."""


def _path_to_json(value: Any) -> dict[str, str]:
    if isinstance(value, PurePath):
        return {"__path__": str(value)}
    raise TypeError(f"Only JSON values and paths go between processes. Received: {value!r}")


def _path_from_json(data: dict[str, Any]) -> Any:
    return Path(data["__path__"]) if set(data) == {"__path__"} else data


def _gather_bytes(value: Any) -> list[bytes]:
    """Every process' `value` as JSON bytes (paths included; no pickle, ever),
    in process order, through one all-gather of padded byte arrays after one
    of their lengths."""
    from jax.experimental import multihost_utils

    encoded = json.dumps(value, default=_path_to_json).encode()
    data = np.frombuffer(encoded, dtype=np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [gathered[i, : int(size)].tobytes() for i, size in enumerate(sizes.reshape(-1))]


def broadcast_object(value: Any) -> Any:
    """Process 0's `value` (JSON values and paths), on every process."""
    if process_count() == 1:
        return value
    return json.loads(_gather_bytes(value)[0], object_hook=_path_from_json)


def all_objects(value: Any) -> list[Any]:
    """Every process' `value` (JSON values and paths), in process order, on
    every process."""
    if process_count() == 1:
        return [value]
    return [json.loads(data, object_hook=_path_from_json) for data in _gather_bytes(value)]


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (`flag` itself in one process)."""
    if process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([int(flag)]))).any())


def barrier() -> None:
    """Waits for every process (no-op in one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("chronos-moe barrier")


def shutdown_processes() -> None:
    """Leaves the multi-host run (no-op unless `initialize_processes` joined one)."""
    global _joined
    if _joined:
        jax.distributed.shutdown()
        _joined = False
