"""Synthetic series: demo data (`generate_sample_series`) and KernelSynth (`kernel_synth`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chronos_moe.validation import positive_int

# Seasonal periods (in steps) of the demo series: weekly/daily/monthly/yearly cycles of
# the usual sampling frequencies.
_SAMPLE_PERIODS = (4, 7, 12, 24, 30, 52, 168)


def generate_sample_series(num_series: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """Demo series: level + trend + seasonalities + noise + occasional level shifts.

    Each series has its own scale (log-uniform from 0.1 to 10 000), a level, a
    linear trend, one to three seasonal components (periods among 4, 7, 12, 24,
    30, 52, 168 steps that fit at least twice in `length`, with random amplitude
    and phase), Gaussian noise and, on average, one level shift per 250 steps.
    Reproducible by `seed`.

    Args:
        num_series: int. Number of series.
        length: int. Values per series.
        seed: int. Seed of the generator. Defaults to `0`.

    Returns:
        A list of `num_series` float32 arrays of shape `(length,)`.

    Example:

    >>> series = generate_sample_series(3, 100, seed=0)
    >>> len(series), series[0].shape, series[0].dtype
    (3, (100,), dtype('float32'))
    >>> bool(np.array_equal(series[1], generate_sample_series(3, 100, seed=0)[1]))
    True
    """
    _check_count("num_series", num_series)
    _check_count("length", length)
    rng = np.random.default_rng(seed)
    steps = np.arange(length, dtype=np.float64)
    periods = [p for p in _SAMPLE_PERIODS if 2 * p <= length] or [max(2, length // 2)]
    series = []
    for _ in range(num_series):
        scale = 10.0 ** rng.uniform(-1.0, 4.0)
        values = rng.uniform(1.0, 3.0) + rng.normal(0.0, 1.0) * steps / length
        for period in rng.choice(
            periods, size=min(len(periods), rng.integers(1, 4)), replace=False
        ):
            amplitude, phase = rng.uniform(0.1, 1.0), rng.uniform(0.0, 2 * np.pi)
            values = values + amplitude * np.sin(2 * np.pi * steps / period + phase)
        for position in rng.integers(0, length, size=rng.poisson(length / 250)):
            values[position:] += rng.normal(0.0, 0.5)
        values = values + rng.uniform(0.02, 0.3) * rng.standard_normal(length)
        series.append((scale * values).astype(np.float32))
    return series


def kernel_synth(
    num_series: int, length: int = 1024, max_kernels: int = 5, seed: int = 0
) -> list[np.ndarray]:
    """KernelSynth (Chronos paper, Ansari et al. 2024): draws from random Gaussian processes.

    For each series, 1 to `max_kernels` kernels are drawn (with replacement) from a
    bank — periodic (`ExpSineSquared`) at 21 periods of the usual frequencies
    (from 4 to 730 steps), linear (`DotProduct`, sigma_0 in {0, 1, 10}), RBF
    (length scale in {0.1, 1, 10}), rational quadratic (alpha in {0.1, 1, 10}),
    white noise (level in {0.1, 1}) and constant — the same bank as the paper's
    script, with inputs `linspace(0, 1, length)` and periods in steps. The
    kernels are combined left to right with a random `+` or `×`, and one
    series is drawn from the zero-mean GP prior with that covariance, through a
    Cholesky factor (a small diagonal jitter is added when needed; a covariance
    that still cannot be factored is redrawn, as the paper's script does).

    Args:
        num_series: int. Number of series.
        length: int. Values per series (the paper uses 1024). Defaults to `1024`.
        max_kernels: int. Largest number of kernels combined. Defaults to `5`.
        seed: int. Seed of the generator. Defaults to `0`.

    Returns:
        A list of `num_series` float32 arrays of shape `(length,)`.

    Example:

    >>> series = kernel_synth(2, length=64, seed=0)
    >>> [s.shape for s in series], bool(np.isfinite(series[0]).all())
    ([(64,), (64,)], True)
    >>> bool(np.array_equal(series[0], kernel_synth(2, length=64, seed=0)[0]))
    True
    """
    _check_count("num_series", num_series)
    _check_count("length", length)
    _check_count("max_kernels", max_kernels)
    rng = np.random.default_rng(seed)
    inputs = np.linspace(0.0, 1.0, length)
    distances = np.abs(inputs[:, None] - inputs[None, :])
    bank = _kernel_bank(length)
    series = []
    while len(series) < num_series:
        chosen = rng.integers(len(bank), size=rng.integers(1, max_kernels + 1))
        covariance = bank[chosen[0]](inputs, distances)
        for index in chosen[1:]:
            kernel = bank[index](inputs, distances)
            covariance = covariance + kernel if rng.integers(2) == 0 else covariance * kernel
        factor = _cholesky_with_jitter(covariance)
        if factor is None:
            continue
        series.append((factor @ rng.standard_normal(length)).astype(np.float32))
    return series


def _kernel_bank(length: int) -> list[Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The KernelSynth kernel bank; each entry maps the inputs `x` `(n,)` and their
    distances `|x_i - x_j|` `(n, n)` to a covariance `(n, n)`.

    Formulas are scikit-learn's, with its default hyper-parameters where the paper
    keeps them (length scale 1 for the periodic and rational-quadratic kernels,
    constant value 1).
    """

    def periodic(period_steps: float):
        periodicity = period_steps / length  # the inputs span [0, 1]
        return lambda x, d: np.exp(-2.0 * np.sin(np.pi * d / periodicity) ** 2)

    def linear(sigma_0: float):
        return lambda x, d: sigma_0**2 + np.outer(x, x)

    def rbf(length_scale: float):
        return lambda x, d: np.exp(-(d**2) / (2.0 * length_scale**2))

    def rational_quadratic(alpha: float):
        return lambda x, d: (1.0 + d**2 / (2.0 * alpha)) ** -alpha

    def white(noise_level: float):
        return lambda x, d: noise_level * np.eye(len(x))

    def constant(x, d):
        return np.ones_like(d)

    periods = (24, 48, 96, 168, 336, 672, 7, 14, 30, 60, 365, 730, 4, 26, 52, 4, 6, 12, 4, 40, 10)
    return (
        [periodic(p) for p in periods]
        + [linear(s) for s in (0.0, 1.0, 10.0)]
        + [rbf(s) for s in (0.1, 1.0, 10.0)]
        + [rational_quadratic(a) for a in (0.1, 1.0, 10.0)]
        + [white(n) for n in (0.1, 1.0)]
        + [constant]
    )


def _cholesky_with_jitter(covariance: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of `covariance` plus a small diagonal jitter.

    Why the jitter: sums and products of these kernels are positive semi-definite
    but often numerically singular (a linear kernel alone has rank 2). It starts at
    1e-6 of the mean variance, far below any kernel's own scale, and grows only if
    the factorisation still fails.
    """
    if not np.all(np.isfinite(covariance)):
        return None
    size = max(float(np.mean(np.abs(np.diag(covariance)))), 1e-12)
    diagonal = np.arange(len(covariance))
    for jitter in (1e-6, 1e-4, 1e-2):
        jittered = covariance.copy()
        jittered[diagonal, diagonal] += jitter * size
        try:
            return np.linalg.cholesky(jittered)
        except np.linalg.LinAlgError:
            continue
    return None


def _check_count(name: str, value: int) -> None:
    positive_int(name, value)
