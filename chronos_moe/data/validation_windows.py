"""`ValidationWindows`: the last window of every usable series, for validation
(the reference training script's `ValidationSplitSampler`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chronos_moe.data.source import SeriesSource
from chronos_moe.data.windows import (
    Window,
    WindowId,
    check_window_arguments,
    extract_window,
    kept_series,
)


class ValidationWindows(Sequence):
    """The last window of every usable series, sources in order: a finite sequence.

    The future is the last `prediction_length` values of each series and the past
    the `context_length` values before them (the reference's
    `ValidationSplitSampler`). No augmentation, no shuffling, no skipping.

    Args:
        sources: list of `SeriesSource`.
        context_length: int. Length of the past. Defaults to `512`.
        prediction_length: int. Length of the future. Defaults to `64`.
        min_past: int. Series shorter than `min_past + prediction_length` are
            dropped. Defaults to `64`.
        max_missing_prop: float. Series with a larger missing share are dropped.
            Defaults to `0.9`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.data.source import InMemorySeries
    >>> windows = ValidationWindows([InMemorySeries([np.arange(12.0)])], 4, 3, min_past=2)
    >>> len(windows), windows[0].past.tolist(), windows[0].future.tolist()
    (1, [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0])
    """

    def __init__(
        self,
        sources: Sequence[SeriesSource],
        context_length: int = 512,
        prediction_length: int = 64,
        min_past: int = 64,
        max_missing_prop: float = 0.9,
    ) -> None:
        check_window_arguments(context_length, prediction_length, min_past, max_missing_prop)
        self.sources = list(sources)
        self.context_length = int(context_length)
        self.prediction_length = int(prediction_length)
        self.kept, self.report = kept_series(
            self.sources, min_past, prediction_length, max_missing_prop
        )
        self._starts = np.cumsum([0] + [len(kept) for kept in self.kept])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> Window:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window index {index} out of range [0, {len(self)})")
        index %= len(self)
        file = int(np.searchsorted(self._starts, index, side="right")) - 1
        series = int(self.kept[file][index - self._starts[file]])
        cut = int(self.sources[file].lengths[series]) - self.prediction_length
        return extract_window(
            self.sources[file],
            WindowId(file, series, cut, 0),
            self.context_length,
            self.prediction_length,
        )
