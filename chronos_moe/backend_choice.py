"""Which Keras backend chronos-moe runs on, decided before Keras is imported.

This module imports no Keras (and no torch or JAX): `chronos_moe/__init__.py`
calls `select_backend` when the package is imported, so every `chronos_moe.*`
module that imports Keras finds ``KERAS_BACKEND`` already set, whatever the
order of its imports. Left unset, Keras itself would fall back to TensorFlow
(or whatever ``~/.keras/keras.json`` says), which chronos-moe does not use.

Example:

>>> import chronos_moe
>>> from chronos_moe.backend_choice import select_backend
>>> select_backend() in ("torch", "jax")
True
"""

from __future__ import annotations

import importlib.util
import os
import sys

SUPPORTED_BACKENDS = ("torch", "jax")

_INSTALL_ADVICE = (
    "install one of them, e.g. `pip install torch==2.13.0` (pinned: another version may pull a "
    "multi-GB CUDA build) or `pip install jax`, then reinstall chronos-moe from its clone with "
    '`pip install -e ".[torch]"` or `pip install -e ".[jax]"`'
)


def select_backend() -> str:
    """Sets ``KERAS_BACKEND`` to a usable backend if Keras is not imported yet.

    ``KERAS_BACKEND`` wins when set; otherwise torch when it is installed, else
    JAX. Nothing is imported to decide (installed packages are looked up).

    Returns:
        The name of the backend Keras uses (or will use once imported).

    Raises:
        RuntimeError: if Keras was already imported with a backend that
            chronos-moe does not support, ``KERAS_BACKEND`` names one, or
            neither torch nor JAX is installed.
    """
    if "keras" in sys.modules:
        import keras

        active = keras.config.backend()
        if active not in SUPPORTED_BACKENDS:
            raise RuntimeError(
                f"chronos-moe runs on the Keras backends {SUPPORTED_BACKENDS}, but Keras was "
                f"already imported with backend={active!r}. Set KERAS_BACKEND=torch or "
                "KERAS_BACKEND=jax before importing keras (or import chronos_moe first)."
            )
        return active
    requested = os.environ.get("KERAS_BACKEND")
    if requested:
        if requested not in SUPPORTED_BACKENDS:
            raise RuntimeError(
                f"KERAS_BACKEND must be one of {SUPPORTED_BACKENDS} for chronos-moe. "
                f"Received: KERAS_BACKEND={requested!r}"
            )
        return requested
    for name in SUPPORTED_BACKENDS:
        if importlib.util.find_spec(name) is not None:
            os.environ["KERAS_BACKEND"] = name
            return name
    raise RuntimeError(
        f"chronos-moe needs torch or JAX, and neither is installed: {_INSTALL_ADVICE}."
    )
