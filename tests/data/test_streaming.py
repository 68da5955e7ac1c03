"""Streaming: reading a large Arrow file keeps the resident memory far below its size."""

import numpy as np
import pytest

from chronos_moe.config import ChronosConfig
from chronos_moe.data import ArrowSeriesFile, ChronosDataset, write_arrow

SERIES, LENGTH = 2000, 10_000  # 80 MB of float32


def _status(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak():
    """Resets VmHWM (the peak RSS) to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc"
)
def test_reading_a_large_file_does_not_load_it(tmp_path):
    def series():  # written from a generator: the test never holds the data either
        rng = np.random.default_rng(0)
        for _ in range(SERIES):
            yield rng.standard_normal(LENGTH, dtype=np.float32)

    path = write_arrow(series(), tmp_path / "large.arrow")
    size = path.stat().st_size
    assert size > 75e6

    peaks = _reset_peak()
    before = _status("VmRSS")
    samples = []
    with ArrowSeriesFile(path) as file:  # opening scans every value
        samples.append(_status("VmRSS"))
        total = 0.0
        for values in file:  # a full pass, series by series
            total += float(values[0])
        samples.append(_status("VmRSS"))
        assert file.num_series == SERIES
        config = ChronosConfig(context_length=512, prediction_length=64)
        dataset = ChronosDataset([file], config, batch_size=32)
        for index in range(60):  # random windows all over the file
            dataset[index]
        samples.append(_status("VmRSS"))
        peak = _status("VmHWM") if peaks else max(samples)
    growth = peak - before
    assert growth < 0.3 * size, (
        f"RSS grew by {growth / 1e6:.1f} MB reading a {size / 1e6:.0f} MB file"
    )
