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


def positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """`value` as an `int` when it is a positive integer (a bool is not), else a
    `ValueError` naming `name`; `None` passes when `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)
