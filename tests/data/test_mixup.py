"""TSMixup: convex combinations of mean-scaled series, reproducible by seed."""

import numpy as np
import pytest

from chronos_moe.data import generate_sample_series, tsmixup


@pytest.fixture
def base():
    return generate_sample_series(10, 400, seed=0)


def test_reproducible_and_different_across_seeds(base):
    first = tsmixup(base, 8, min_length=64, max_length=256, seed=3)
    again = tsmixup(base, 8, min_length=64, max_length=256, seed=3)
    other = tsmixup(base, 8, min_length=64, max_length=256, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, other, strict=True)
    )


def test_lengths_are_drawn_in_the_range_and_capped_by_short_series(base):
    mixes = tsmixup(base, 200, min_length=64, max_length=256, seed=0)
    lengths = np.array([len(m) for m in mixes])
    assert lengths.min() >= 64 and lengths.max() <= 256
    assert lengths.max() - lengths.min() > 100
    short = tsmixup([np.arange(1.0, 31.0)], 5, min_length=64, max_length=128, seed=0)
    assert all(len(m) == 30 for m in short)


def test_single_components_are_mean_scaled_windows():
    # Ramps 1000 * i + 1 + t: a window is identified by its first value.
    ramps = [1000.0 * i + 1.0 + np.arange(300.0) for i in range(4)]
    mixes = tsmixup(ramps, 50, max_components=1, min_length=32, max_length=64, seed=1)
    for mix in mixes:
        assert np.mean(np.abs(mix)) == pytest.approx(1.0, rel=1e-5)
        scale = 1.0 / (mix[1] - mix[0])  # consecutive ramp values differ by 1
        first = round(float(mix[0] * scale))
        series, start = divmod(first - 1, 1000)
        window = ramps[series][start : start + len(mix)]
        np.testing.assert_allclose(mix, window / np.mean(np.abs(window)), rtol=1e-5)


def test_mixes_are_convex_combinations_of_scaled_series(base):
    # mean |sum w_i x_i| <= sum w_i mean |x_i| = 1 for weights on the simplex
    mixes = tsmixup(base, 100, min_length=32, max_length=64, seed=2)
    assert all(np.mean(np.abs(m)) <= 1.0 + 1e-5 for m in mixes)
    assert any(np.mean(np.abs(m)) < 0.99 for m in mixes)  # some mixes have several parts


def test_argument_errors(base):
    with pytest.raises(ValueError, match="`series_list`"):
        tsmixup([], 3)
    with pytest.raises(ValueError, match="`num_series`"):
        tsmixup(base, 0)
    with pytest.raises(ValueError, match="`min_length`"):
        tsmixup(base, 3, min_length=10, max_length=5)
    with pytest.raises(ValueError, match="`alpha`"):
        tsmixup(base, 3, alpha=0.0)
