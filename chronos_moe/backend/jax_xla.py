"""JAX's and XLA's settings for chronos-moe (set by `chronos_moe.backend.jax`
when it is imported): the persistent compilation cache, so that a second
process loads what the first compiled, and XLA:CPU's fusion flags."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

# The persistent compilation cache: where compiled programs are kept between
# processes. A directory, or one of `CACHE_OFF` to turn it off; unset means
# `$XDG_CACHE_HOME/chronos-moe/jax` (`~/.cache/chronos-moe/jax`).
CACHE_VARIABLE = "CHRONOS_MOE_JAX_CACHE_DIR"
CACHE_OFF = ("", "0", "off", "none", "false")


def compilation_cache_directory(environ: Mapping[str, str] = os.environ) -> str | None:
    """Where chronos-moe keeps JAX's compiled programs between processes.

    Args:
        environ: the environment to read `CHRONOS_MOE_JAX_CACHE_DIR` (and
            `XDG_CACHE_HOME`) from.

    Returns:
        The directory, or `None` when the variable turns the cache off.

    Example:

    >>> compilation_cache_directory({"CHRONOS_MOE_JAX_CACHE_DIR": "off"}) is None
    True
    >>> compilation_cache_directory({"XDG_CACHE_HOME": "/cache"})
    '/cache/chronos-moe/jax'
    """
    value = environ.get(CACHE_VARIABLE)
    if value is not None and value.strip().lower() in CACHE_OFF:
        return None
    if value is not None:
        return os.path.abspath(os.path.expanduser(value))
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "chronos-moe", "jax")


def use_persistent_compilation_cache() -> str | None:
    """Points JAX's persistent compilation cache at `compilation_cache_directory()`,
    so that a second process loads the programs the first compiled (a
    forecast's decoding loop, a training step) instead of compiling them again.

    Called once, when `chronos_moe.backend.jax` is imported. A cache directory set for JAX
    itself (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) is left as it is.
    Programs that compile in under a second are not kept (JAX's threshold,
    `jax_persistent_cache_min_compile_time_secs`).

    Returns:
        The cache directory in use, or `None` when the cache is off.
    """
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir  # set for JAX itself: left alone
    directory = compilation_cache_directory()
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory


# XLA:CPU's YNNPACK fusions of elementwise ops and reductions take every
# operand materialised: in the training step's attention softmax that is the
# row sums' reciprocal broadcast to `(batch, heads, q_len, k_len)`, one per
# layer, kept until the backward pass (and fed to YNNPACK reductions that run
# slower here than XLA's own loops). Without them (YNNPACK still computes the
# products) the chronos-t5-tiny float32 step needs 1.0 GB less
# (`benchmarks/RESULTS.md`, "JAX training memory"). Off with
# `CHRONOS_MOE_XLA_CPU_FUSIONS=default`.
CPU_FUSIONS_VARIABLE = "CHRONOS_MOE_XLA_CPU_FUSIONS"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# XLA aborts the process on a flag it does not know: set it only for the
# jaxlib versions it was tested with.
YNN_FLAG_VERSIONS = ((0, 10), (0, 11))
TRAINING_FUSION_FLAG = f"{YNN_FUSION_FLAG}=-eltwise,-reduce"


def cpu_fusion_flags(environ: Mapping[str, str], jaxlib_version: str) -> str | None:
    """The `XLA_FLAGS` value that leaves XLA:CPU's elementwise and reduction
    fusions to XLA (not YNNPACK), or `None` to leave `XLA_FLAGS` as it is.

    Args:
        environ: the environment (`XLA_FLAGS`, `CHRONOS_MOE_XLA_CPU_FUSIONS`).
        jaxlib_version: the installed jaxlib's version.

    Returns:
        `XLA_FLAGS` with the YNNPACK flag added, or `None` when the variable
        says `default`, `XLA_FLAGS` sets the flag already, or jaxlib is
        outside `YNN_FLAG_VERSIONS`.

    Example:

    >>> cpu_fusion_flags({"XLA_FLAGS": "--xla_dump_to=/tmp/x"}, "0.10.2")
    '--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=-eltwise,-reduce'
    >>> cpu_fusion_flags({"CHRONOS_MOE_XLA_CPU_FUSIONS": "default"}, "0.10.2") is None
    True
    >>> cpu_fusion_flags({}, "0.4.30") is None
    True
    """
    if environ.get(CPU_FUSIONS_VARIABLE, "").strip().lower() == "default":
        return None
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG in flags:
        return None
    try:
        version = tuple(int(part) for part in jaxlib_version.split(".")[:2])
    except ValueError:
        return None
    low, high = YNN_FLAG_VERSIONS
    if not low <= version < high:
        return None
    return f"{flags} {TRAINING_FUSION_FLAG}".strip()


# The forecasting programs (`compile_stateless`) are compiled with their own
# YNNPACK fusion set: products, reductions and single products in YNNPACK,
# elementwise work left to XLA. Measured on the 32-series forecast, both
# programs in one process called alternately (`benchmarks/RESULTS.md`, "The
# redesign, before and after"): 0.81–1.04× (median 0.94×, 5 rounds) the time
# with the training flag above, which the process carries (XLA_FLAGS is read
# once per process, a `jax.jit` option per program).
INFERENCE_FUSIONS = ",".join(
    f"LIBRARY_FUSION_TYPE_{kind}"
    for kind in ("DOT", "REDUCE", "INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION")
)


def inference_compiler_options(xla_flags: str, platform: str) -> dict[str, str] | None:
    """The `jax.jit(compiler_options=...)` of the forecasting programs: on a
    CPU whose process carries `cpu_fusion_flags`' flag, the YNNPACK fusion set
    `INFERENCE_FUSIONS`; else `None` (the process' own flags, e.g. a YNNPACK
    setting of the user's, stay in force).

    Example:

    >>> options = inference_compiler_options(TRAINING_FUSION_FLAG, "cpu")
    >>> options["xla_cpu_experimental_ynn_fusion_type"] == INFERENCE_FUSIONS
    True
    >>> inference_compiler_options(TRAINING_FUSION_FLAG, "gpu") is None
    True
    >>> inference_compiler_options("", "cpu") is None
    True
    """
    if platform != "cpu" or TRAINING_FUSION_FLAG not in xla_flags.split():
        return None
    return {YNN_FUSION_FLAG.removeprefix("--"): INFERENCE_FUSIONS}


def use_cpu_fusion_flags() -> None:
    """Sets `cpu_fusion_flags` in `XLA_FLAGS`, which XLA reads when JAX
    starts its first device: called once, when `chronos_moe.backend.jax` is imported (in a
    process that used JAX before, the flag does not apply)."""
    import jaxlib

    flags = cpu_fusion_flags(os.environ, jaxlib.__version__)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags
