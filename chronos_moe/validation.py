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

from typing import Any

import numpy as np

from chronos_moe.errors import IndivisibleBatchError, IndivisibleExpertsError


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
