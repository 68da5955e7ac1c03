"""Argument checks shared across the package, worded as Keras words them: the
argument, what was expected, and `Received: name=value`.

Example:

>>> positive_int("batch_size", 8)
8
>>> try:
...     positive_int("batch_size", 0)
... except ValueError as error:
...     print(error)
`batch_size` must be a positive integer. Received: batch_size=0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from chronos_moe.errors import (
    IndivisibleBatchError,
    IndivisibleExpertsError,
    ProcessMeshError,
    ProcessSettingsError,
)

# The multi-host settings (`distribution:` keys of a training config) and the
# environment variables `keras.distribution.initialize` reads for each.
PROCESS_ENVIRONMENT = {
    "coordinator_address": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
}


def positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """`value` as an `int` when it is a positive integer (a bool is not), else a
    `ValueError` naming `name`; `None` passes when `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_mesh_shape(
    data_parallel: Any,
    expert_parallel: Any,
    num_experts: int | None = None,
    batch_size: int | None = None,
) -> tuple[int, int]:
    """`(data_parallel, expert_parallel)` when they make a usable
    `("batch", "expert")` device mesh for `num_experts` experts and a global
    batch of `batch_size` series (each checked when given), else the named
    error of `chronos_moe.errors` (`IndivisibleExpertsError`,
    `IndivisibleBatchError`; a `ValueError` for a size that is not a positive
    integer). Needs no backend: the YAML config runs it before Keras starts.

    Example:

    >>> check_mesh_shape(4, 2, num_experts=8, batch_size=32)
    (4, 2)
    >>> try:
    ...     check_mesh_shape(4, 3, num_experts=8)
    ... except ValueError as error:
    ...     print(type(error).__name__)
    IndivisibleExpertsError
    """
    data_parallel = positive_int("data_parallel", data_parallel)
    expert_parallel = positive_int("expert_parallel", expert_parallel)
    if num_experts is not None and num_experts % expert_parallel:
        raise IndivisibleExpertsError(
            f"`expert_parallel` must divide `num_experts`: each device of the expert axis holds "
            f"num_experts / expert_parallel whole experts. Received: expert_parallel="
            f"{expert_parallel}, num_experts={num_experts}"
        )
    if batch_size is not None and batch_size % data_parallel:
        raise IndivisibleBatchError(
            "`data_parallel` must divide the global batch: each replica takes "
            f"batch / data_parallel series of every step. Received: data_parallel={data_parallel}, "
            f"batch_size={batch_size}"
        )
    return data_parallel, expert_parallel


def cluster_settings(
    distribution: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """The multi-host settings of a run, checked: `coordinator_address`
    (`host:port` of process 0), `num_processes` and this `process_id`, each
    from `distribution` (a training config's block) or else from the
    environment variable Keras reads for it (`PROCESS_ENVIRONMENT`).
    `num_processes` is 1 when neither gives it (one process).

    Raises `ProcessSettingsError` for a `num_processes` > 1 without a
    coordinator or a `process_id`, a `process_id` outside `[0, num_processes)`
    (without `num_processes`, any but 0), a coordinator that is not
    `host:port`; `IndivisibleBatchError` when `batch_size`
    (the global batch) is given and `num_processes` does not divide it. Needs
    no backend: the CLI reads `process_id` before Keras starts.

    Example:

    >>> cluster_settings({"num_processes": 2, "process_id": 1,
    ...     "coordinator_address": "10.0.0.1:1234"}, environ={})
    {'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 1}
    >>> cluster_settings(None, environ={})["num_processes"]
    1
    """
    distribution = distribution or {}
    found: dict[str, Any] = {}
    for key, variable in PROCESS_ENVIRONMENT.items():
        value = distribution.get(key)
        if value is None and environ.get(variable, "").strip():
            value = environ[variable].strip()
            value = value if key == "coordinator_address" else _integer(variable, value)
        found[key] = value
    received = ", ".join(f"{key}={value!r}" for key, value in found.items())
    count = positive_int("num_processes", found["num_processes"], allow_none=True) or 1
    process_id = found["process_id"]
    if process_id is not None and (
        isinstance(process_id, bool)
        or not isinstance(process_id, (int, np.integer))
        or not 0 <= process_id < count
    ):
        raise ProcessSettingsError(
            f"`process_id` must be an integer in [0, num_processes): process 0 is the "
            f"coordinator, the others count on from 1. Received: {received}"
        )
    if count > 1 and (not found["coordinator_address"] or process_id is None):
        missing = "coordinator_address" if not found["coordinator_address"] else "process_id"
        raise ProcessSettingsError(
            f"A run of num_processes > 1 needs `{missing}` too (in `distribution:` or "
            f"{PROCESS_ENVIRONMENT[missing]}): every process dials the coordinator "
            f"(`host:port` of process 0) and says which one it is. Received: {received}"
        )
    address = found["coordinator_address"]
    if address is not None and (not isinstance(address, str) or ":" not in address):
        raise ProcessSettingsError(
            f"`coordinator_address` must be `host:port` (process 0's, reachable from every "
            f"process). Received: {received}"
        )
    if batch_size is not None and batch_size % count:
        raise IndivisibleBatchError(
            "The number of processes must divide the global batch: each process reads "
            f"batch / processes series of every step. Received: num_processes={count}, "
            f"batch_size={batch_size}"
        )
    return {**found, "num_processes": count, "process_id": process_id or 0}


def check_process_mesh(process_of_device: Any, process_count: int) -> None:
    """Checks a device mesh for a run of `process_count` processes, given the
    process of each of its devices (`(data_parallel, expert_parallel)`
    integers, the mesh's layout). Each process must hold whole rows — whole
    data-parallel replicas, their `expert_parallel` devices in one process —
    the same number of rows each, rows `[i·R, (i+1)·R)` for process `i`: then
    the slice `i` of `process_count` of the global batch
    (`ChronosDataset.shard`) is exactly process `i`'s part of it, and each
    process holds every expert shard of its replicas. Raises
    `ProcessMeshError` otherwise (a mesh that leaves devices out, or a
    replica that spans processes).

    Example:

    >>> check_process_mesh([[0, 0], [1, 1]], 2)   # 2 processes x 2 devices, mesh 2 x 2
    >>> try:
    ...     check_process_mesh([[0, 0, 1, 1]], 2)  # one replica over both processes
    ... except ValueError as error:
    ...     print(type(error).__name__)
    ProcessMeshError
    """
    grid = np.asarray(process_of_device)
    rows = grid.shape[0]
    expected = np.repeat(np.arange(process_count), max(rows // process_count, 1))
    if rows % process_count or not (grid == expected[:, None]).all():
        raise ProcessMeshError(
            f"In a run of {process_count} processes the device mesh (data_parallel x "
            "expert_parallel) must cover every device of every process, each process holding "
            "whole data-parallel replicas (expert_parallel must divide the devices of one "
            "process): set data_parallel x expert_parallel to the number of devices of all "
            f"processes. Received: the processes of the mesh's devices {grid.tolist()}"
        )


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProcessSettingsError(
            f"`{name}` must be an integer. Received: {name}={text!r}"
        ) from None
