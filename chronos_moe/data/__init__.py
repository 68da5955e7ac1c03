"""Training data: Arrow files (memory-mapped, streamed), windows, batches, synthetic series.

* `ArrowSeriesFile`, `read_arrow`, `write_arrow`: Arrow IPC files in the GluonTS/Chronos
  layout (`arrow.py`).
* `InMemorySeries`, `series_from_dataframe`, `IdentifiedSeries`: in-memory data (`source.py`).
* `LongFrameSeries`, `forecast_frame`: long-format DataFrames in and out of
  `ChronosPipeline.predict_df` (`long_frame.py`, which imports pandas: import it
  from there).
* `TrainingWindows`, `ValidationWindows`: the reference training script's window
  sampling (`windows.py`); `DataReport`: what was dropped and why (`report.py`).
* `ChronosDataset`: tokenized batches for `model.fit` (`dataset.py`).
* `generate_sample_series`, `kernel_synth` (`synthetic.py`) and `tsmixup` (`mixup.py`).
* `DataError`: every data problem, named by file, row and field (`errors.py`).

Only `ChronosDataset` needs Keras; it is imported on first use, so reading,
writing and generating series (`chronos-moe generate-data`) never import Keras.
"""

from typing import TYPE_CHECKING, Any

from chronos_moe.data.arrow import ArrowSeriesFile, read_arrow, write_arrow
from chronos_moe.data.errors import DataError
from chronos_moe.data.mixup import tsmixup
from chronos_moe.data.report import DataReport, SourceReport
from chronos_moe.data.source import (
    IdentifiedSeries,
    InMemorySeries,
    SeriesSource,
    series_from_dataframe,
)
from chronos_moe.data.synthetic import generate_sample_series, kernel_synth
from chronos_moe.data.validation_windows import ValidationWindows
from chronos_moe.data.windows import TrainingWindows, Window, WindowId

__all__ = [
    "ArrowSeriesFile",
    "ChronosDataset",
    "DataError",
    "DataReport",
    "IdentifiedSeries",
    "InMemorySeries",
    "SeriesSource",
    "SourceReport",
    "TrainingWindows",
    "ValidationWindows",
    "Window",
    "WindowId",
    "generate_sample_series",
    "kernel_synth",
    "read_arrow",
    "series_from_dataframe",
    "tsmixup",
    "write_arrow",
]

if TYPE_CHECKING:
    from chronos_moe.data.dataset import ChronosDataset


def __getattr__(name: str) -> Any:
    if name == "ChronosDataset":
        from chronos_moe.data.dataset import ChronosDataset

        return ChronosDataset
    raise AttributeError(f"module 'chronos_moe.data' has no attribute {name!r}")
