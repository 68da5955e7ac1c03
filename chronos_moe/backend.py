"""The one module that knows which Keras backend is active.

Everything else in chronos-moe is written with `keras.ops`. This module

* chooses a backend before Keras is imported (``KERAS_BACKEND`` if set, else
  torch if importable, else JAX) so that Keras never falls back to TensorFlow,
* reports the backend and device (`backend_info`),
* holds the little glue that cannot be expressed with `keras.ops`: compiling a
  stateless function over a model's variables and drawing random numbers inside
  a compiled loop.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

SUPPORTED_BACKENDS = ("torch", "jax")


def select_backend() -> str:
    """Sets ``KERAS_BACKEND`` to a usable backend before Keras is imported.

    Returns:
        The name of the backend Keras uses.

    Raises:
        RuntimeError: if Keras was already imported with a backend that
            chronos-moe does not support, or none of torch and JAX is installed.
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
        "chronos-moe needs torch or JAX: install one (`pip install chronos-moe[torch]` "
        "or `pip install chronos-moe[jax]`)."
    )


BACKEND = select_backend()

import keras  # noqa: E402  (the backend must be chosen first)


def backend_info() -> dict[str, str]:
    """Returns the active Keras backend and the device it computes on.

    Example:

    >>> import chronos_moe
    >>> info = chronos_moe.backend_info()
    >>> info["backend"] in ("torch", "jax")
    True
    """
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
        version = torch.__version__
    else:
        import jax

        first = jax.devices()[0]
        device = f"{first.platform} ({first.device_kind})"
        version = jax.__version__
    return {
        "backend": BACKEND,
        "device": device,
        "backend_version": version,
        "keras_version": keras.__version__,
    }


def compile_stateless(model: keras.Layer, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compiles ``fn(*args)``, a pure function of its tensor arguments and the
    variables of ``model``, for repeated inference calls.

    On JAX the function is `jax.jit`-compiled with the variable values passed as
    arguments (so new weights never trigger a recompile and are never baked in as
    constants); the returned callable reads the current values at each call. On
    torch the function runs eagerly without autograd bookkeeping.
    """
    if BACKEND == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(
                state_mapping=list(zip(model.variables, values, strict=True))
            ):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in model.variables], *args)

    import torch

    def eager(*args):
        with torch.no_grad():
            return fn(*args)

    return eager


def uniform_noise(seed: Any, step: Any, shape: tuple[int, ...]) -> Any:
    """Draws float32 uniforms in [0, 1) for decoding step ``step``.

    Deterministic in ``(seed, step)`` and usable inside a compiled loop, where
    ``seed`` and ``step`` are scalar integer tensors (Keras' seed generators
    cannot be advanced inside a traced JAX loop).
    """
    if BACKEND == "jax":
        import jax

        key = jax.random.fold_in(jax.random.key(seed), step)
        return jax.random.uniform(key, shape, dtype="float32")
    import torch

    generator = torch.Generator(device=keras.ops.convert_to_tensor(0).device)
    generator.manual_seed(int(seed) * 1_000_003 + int(step))
    return torch.rand(shape, generator=generator, device=generator.device)
