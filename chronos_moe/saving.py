"""Loading `.keras` files that hold chronos-moe models."""

from __future__ import annotations

import os

import keras

# Importing the model modules registers every chronos-moe layer and model with
# Keras' serialization registry.
from chronos_moe.models import chronos_bolt as _chronos_bolt  # noqa: F401
from chronos_moe.models import chronos_t5 as _chronos_t5  # noqa: F401
from chronos_moe.moe import bolt_model as _bolt_moe_model  # noqa: F401
from chronos_moe.moe import model as _moe_model  # noqa: F401


def load_model(
    path: str | os.PathLike, custom_objects: dict | None = None, compile: bool = True
) -> keras.Model:
    """`keras.saving.load_model` with the chronos-moe classes registered.

    A `.keras` file saved on one backend loads on the other (weights only: the
    optimizer state of a torch-saved file does not resume on JAX; resume from a
    training checkpoint directory instead). Loading is always in Keras' safe
    mode: a file holding arbitrary code (a `Lambda` layer) is refused.

    Example:

    ```python
    import chronos_moe

    model = chronos_moe.load_model("run/final/model.keras")
    ```
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected a `.keras` file. Received: {str(path)!r} (no such file)")
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=True
        )
    except ValueError as error:
        raise ValueError(f"Could not load {str(path)!r}: {error}") from error
