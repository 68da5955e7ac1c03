"""The processes of a training run on JAX: one process trains on all the
devices it sees (`chronos_moe.distribution`), so the functions torch's
data-parallel run needs (`torch_ddp.py`) are the identity here: the batch is already global."""

from __future__ import annotations

from typing import Any

import keras


def initialize_processes() -> bool:
    """One process (multi-host JAX is not supported yet): always `False`."""
    return False


def process_index() -> int:
    return 0


def process_count() -> int:
    return 1


def global_sum(x: Any) -> Any:
    """`x`: a JAX step sees the global batch (`keras.distribution` splits it)."""
    return x


def data_parallel(model: keras.Model) -> None:
    """Nothing to install: `keras.distribution` handles the devices."""


def broadcast_object(value: Any) -> Any:
    return value


def all_objects(value: Any) -> list[Any]:
    return [value]


def any_process(flag: bool) -> bool:
    return flag


def barrier() -> None:
    pass


def shutdown_processes() -> None:
    pass
