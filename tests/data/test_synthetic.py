"""Synthetic series: demo data and KernelSynth, reproducible by seed."""

import numpy as np
import pytest

from chronos_moe.data import generate_sample_series, kernel_synth
from chronos_moe.data.synthetic import _kernel_bank


def _equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_sample_series_are_reproducible_and_differ_across_seeds():
    first = generate_sample_series(20, 150, seed=7)
    assert _equal(first, generate_sample_series(20, 150, seed=7))
    assert not _equal(first, generate_sample_series(20, 150, seed=8))
    assert all(s.shape == (150,) and s.dtype == np.float32 for s in first)
    assert all(np.isfinite(s).all() for s in first)


def test_sample_series_have_varied_scales_and_structure():
    series = generate_sample_series(50, 300, seed=0)
    scales = np.array([np.mean(np.abs(s)) for s in series])
    assert scales.max() / scales.min() > 100  # log-uniform scales over 5 decades

    # Seasonality: most series correlate with themselves one period later for some
    # period of the set, far more than white noise would.
    def best_autocorrelation(s):
        s = (s - s.mean()) / s.std()
        return max(np.mean(s[p:] * s[:-p]) for p in (4, 7, 12, 24, 30, 52))

    assert np.median([best_autocorrelation(s) for s in series]) > 0.3
    assert not any(np.allclose(s, s[0]) for s in series)


def test_kernel_synth_is_reproducible_and_differs_across_seeds():
    first = kernel_synth(4, length=64, seed=1)
    assert _equal(first, kernel_synth(4, length=64, seed=1))
    assert not _equal(first, kernel_synth(4, length=64, seed=2))
    assert all(s.shape == (64,) and s.dtype == np.float32 for s in first)
    assert all(np.isfinite(s).all() and s.std() > 0 for s in first)


def test_kernel_synth_counts_and_max_kernels():
    assert len(kernel_synth(3, length=48, max_kernels=1, seed=0)) == 3
    assert len(kernel_synth(2, length=48, max_kernels=5, seed=3)) == 2


def test_kernel_bank_is_the_paper_bank_of_valid_covariances():
    bank = _kernel_bank(64)
    assert len(bank) == 33  # 21 periodic, 3 linear, 3 RBF, 3 RQ, 2 white, 1 constant
    x = np.linspace(0, 1, 64)
    distances = np.abs(x[:, None] - x[None, :])
    for kernel in bank:
        covariance = kernel(x, distances)
        np.testing.assert_allclose(covariance, covariance.T, atol=1e-12)
        eigenvalues = np.linalg.eigvalsh(covariance)
        assert eigenvalues.min() > -1e-8 * max(1.0, eigenvalues.max())


@pytest.mark.parametrize("function", [generate_sample_series, kernel_synth])
def test_counts_must_be_positive(function):
    with pytest.raises(ValueError, match="`num_series`"):
        function(0, 10)
    with pytest.raises(ValueError, match="`length`"):
        function(1, 0)
