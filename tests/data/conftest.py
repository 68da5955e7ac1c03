"""Shared fixtures of the data tests: small Arrow files written in a temporary folder."""

import numpy as np
import pytest

from chronos_moe.data import write_arrow


@pytest.fixture
def arrow_file(tmp_path):
    """Writes `series` to an Arrow file in `tmp_path` and returns its path."""

    def write(series, name="data.arrow", **kwargs):
        return write_arrow(series, tmp_path / name, **kwargs)

    return write


@pytest.fixture
def ramp_series():
    """Series whose values encode their position: series i holds 1000 * i + t."""
    lengths = [120, 200, 90, 300, 150]
    return [1000.0 * i + np.arange(n, dtype=np.float32) for i, n in enumerate(lengths)]
