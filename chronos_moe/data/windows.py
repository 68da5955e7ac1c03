"""Training and validation windows, sampled as the reference Chronos training script does.

The reference (`scripts/training/train.py` of `chronos-forecasting`, built on
GluonTS) turns each data file into an endless stream of windows:

1. series shorter than `min_past + prediction_length`, or with a missing share
   above `max_missing_prop`, are dropped (`has_enough_observations`);
2. each file is cycled forever;
3. each time a series is visited, a share `p ~ U(0, drop_prob)` of its
   observations is set to NaN (missing-value augmentation, training only);
4. a cut point is drawn uniformly among the positions that leave at least
   `min_past` values before and `prediction_length` after; the past is the
   `context_length` values before the cut, left-padded with NaN, the future the
   `prediction_length` values from the cut on;
5. windows whose past is all NaN are skipped;
6. at each step a file is picked with its `probability` and its next window
   taken; a shuffle buffer of `shuffle_buffer_length` windows pseudo-shuffles the
   mixed stream.

Differences, on purpose: each pass draws exactly one window per series (GluonTS'
`ExpectedNumInstanceSampler(num_instances=1)` draws one *on average*), and a file's
series are visited in a new random order on every pass (the reference keeps file
order). The augmentation draws only the mask over the window's own span: the
positions outside the window never reach the model, and each position is still
missing independently with probability `p`.

Randomness: one `numpy.random.Generator` seeded by `seed` draws the file picks,
each pass' order, the cut points and the shuffle-buffer picks. Each window's
augmentation comes from a generator keyed by `(seed, file, series, cycle)`, so
that a window is rebuilt exactly from its identity alone: that is what lets
`get_state` store the shuffle buffer as window identities.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from chronos_moe.data.errors import DataError
from chronos_moe.data.report import DataReport, SourceReport
from chronos_moe.data.source import SeriesSource
from chronos_moe.validation import positive_int


class WindowId(NamedTuple):
    """Identity of a window: the window is a pure function of it.

    Fields:
        file: int. Index of the source (file) in the dataset's list.
        series: int. Index of the series in its source (multivariate rows split).
        cut: int. Position in the series of the first future value.
        cycle: int. The pass over the source the window belongs to (selects its
            missing-value augmentation); 0 for validation windows.
    """

    file: int
    series: int
    cut: int
    cycle: int


@dataclasses.dataclass(frozen=True)
class Window:
    """One window: `past` float32 `(context_length,)` (NaN-padded on the left) and
    `future` float32 `(prediction_length,)`; NaN marks missing values."""

    id: WindowId
    past: np.ndarray
    future: np.ndarray


def check_window_arguments(
    context_length: int, prediction_length: int, min_past: int, max_missing_prop: float
) -> None:
    """Raises a `ValueError` naming the first invalid window argument."""
    for name, value in (
        ("context_length", context_length),
        ("prediction_length", prediction_length),
        ("min_past", min_past),
    ):
        positive_int(name, value)
    if not (isinstance(max_missing_prop, (int, float)) and 0.0 <= max_missing_prop <= 1.0):
        raise ValueError(
            f"`max_missing_prop` must be in [0, 1]. Received: max_missing_prop={max_missing_prop!r}"
        )


def usable_series(
    source: SeriesSource,
    min_past: int,
    prediction_length: int,
    max_missing_prop: float,
) -> tuple[np.ndarray, SourceReport]:
    """The series of `source` that give windows, and a report of those that do not.

    A series is usable when it holds at least `min_past + prediction_length` values
    and its share of missing values (NaN, null, ±inf) is at most
    `max_missing_prop` (the reference's `has_enough_observations`).

    Args:
        source: a `SeriesSource`.
        min_past: int. Values required before the first cut point.
        prediction_length: int. Values required from the cut point on.
        max_missing_prop: float. Largest allowed share of missing values.

    Returns:
        A tuple `(kept, report)`: the int64 indices of the usable series, in source
        order, and a `SourceReport`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.data.source import InMemorySeries
    >>> source = InMemorySeries([np.ones(10), np.ones(3), np.full(10, np.nan)])
    >>> kept, report = usable_series(source, 4, 2, 0.9)
    >>> kept.tolist(), report.too_short, report.too_many_missing
    ([0], 1, 1)
    """
    lengths = source.lengths
    too_short = lengths < min_past + prediction_length
    with np.errstate(invalid="ignore", divide="ignore"):
        too_missing = ~too_short & (source.missing_counts > max_missing_prop * lengths)
    kept = np.flatnonzero(~too_short & ~too_missing).astype(np.int64)
    report = SourceReport(
        name=source.name,
        rows=int(source.num_rows),
        series=int(source.num_series),
        kept=len(kept),
        too_short=int(too_short.sum()),
        too_many_missing=int(too_missing.sum()),
        inf_values=int(source.inf_count),
    )
    return kept, report


def extract_window(
    source: SeriesSource,
    window_id: WindowId,
    context_length: int,
    prediction_length: int,
    drop_prob: float = 0.0,
    seed: int = 0,
) -> Window:
    """Reads one window of a series, with its missing-value augmentation.

    Only the window's span `[cut - context_length, cut + prediction_length)` is
    read. With `drop_prob > 0`, a share `p ~ U(0, drop_prob)` of the span's
    positions is set to NaN, drawn from a generator keyed by
    `(seed, file, series, cycle)`.

    Args:
        source: the `SeriesSource` holding `window_id.series`.
        window_id: `WindowId`. Which window.
        context_length: int. Length of the past.
        prediction_length: int. Length of the future.
        drop_prob: float. Largest share of values set to NaN. Defaults to `0.0`.
        seed: int. The dataset seed. Defaults to `0`.

    Returns:
        A `Window`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.data.source import InMemorySeries
    >>> source = InMemorySeries([np.arange(10.0)])
    >>> window = extract_window(source, WindowId(0, 0, 3, 0), 5, 2)
    >>> window.past.tolist(), window.future.tolist()
    ([nan, nan, 0.0, 1.0, 2.0], [3.0, 4.0])
    """
    file, series, cut, cycle = window_id
    first = max(0, cut - context_length)
    values = source.read(series, first, cut + prediction_length)
    if drop_prob > 0:
        generator = np.random.default_rng((seed, file, series, cycle))
        share = generator.uniform(0.0, drop_prob)
        values[generator.random(len(values)) < share] = np.nan
    past = np.full(context_length, np.nan, dtype=np.float32)
    past[context_length - (cut - first) :] = values[: cut - first]
    return Window(window_id, past, values[cut - first :])


class TrainingWindows:
    """The endless, mixed and shuffled stream of training windows over several sources.

    See the module docstring for the sampling rules. Iterate it (`next(windows)`)
    for windows; `get_state()` / `set_state()` save and restore its exact position.

    Args:
        sources: list of `SeriesSource` (Arrow files, in-memory series).
        context_length: int. Length of the past. Defaults to `512`.
        prediction_length: int. Length of the future. Defaults to `64`.
        min_past: int. Observations required before the cut point. Defaults to `64`.
        max_missing_prop: float. Series with a larger missing share are dropped.
            Defaults to `0.9`.
        probability: list of float, one per source: the chance that a step draws
            from it. Non-negative, summing to 1. Defaults to uniform.
        shuffle_buffer_length: int. Windows in the shuffle buffer; `0` or `1` turns
            shuffling off. Defaults to `100`.
        drop_prob: float. Largest share of values set to NaN per visit (the
            augmentation); `0` turns it off. Defaults to `0.2`.
        seed: int. Seed of all randomness. Defaults to `0`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.data.source import InMemorySeries
    >>> sources = [InMemorySeries([np.arange(50.0), np.arange(80.0)])]
    >>> windows = TrainingWindows(sources, context_length=16, prediction_length=4,
    ...                           min_past=8, shuffle_buffer_length=4, seed=1)
    >>> window = next(windows)
    >>> window.past.shape, window.future.shape, window.id.file
    ((16,), (4,), 0)
    >>> state = windows.get_state()
    >>> upcoming = [next(windows).id for _ in range(5)]
    >>> windows.set_state(state)
    >>> [next(windows).id for _ in range(5)] == upcoming
    True
    """

    def __init__(
        self,
        sources: Sequence[SeriesSource],
        context_length: int = 512,
        prediction_length: int = 64,
        min_past: int = 64,
        max_missing_prop: float = 0.9,
        probability: Sequence[float] | None = None,
        shuffle_buffer_length: int = 100,
        drop_prob: float = 0.2,
        seed: int = 0,
    ) -> None:
        check_window_arguments(context_length, prediction_length, min_past, max_missing_prop)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
        if not isinstance(shuffle_buffer_length, (int, np.integer)) or shuffle_buffer_length < 0:
            raise ValueError(
                "`shuffle_buffer_length` must be a non-negative integer. "
                f"Received: shuffle_buffer_length={shuffle_buffer_length!r}"
            )
        if not (isinstance(drop_prob, (int, float)) and 0.0 <= drop_prob <= 1.0):
            raise ValueError(f"`drop_prob` must be in [0, 1]. Received: drop_prob={drop_prob!r}")
        self.sources = list(sources)
        self.probability = check_probability(probability, len(self.sources))
        self.context_length = int(context_length)
        self.prediction_length = int(prediction_length)
        self.min_past = int(min_past)
        self.max_missing_prop = float(max_missing_prop)
        self.shuffle_buffer_length = int(shuffle_buffer_length)
        self.drop_prob = float(drop_prob)
        self.seed = int(seed)
        self.kept, self.report = kept_series(
            self.sources, self.min_past, self.prediction_length, self.max_missing_prop
        )
        self._cumulative = np.cumsum(self.probability)
        self._rng = np.random.default_rng(self.seed)
        self._cursors = [_Cursor() for _ in self.sources]
        self._buffer: list[Window] = []

    def __iter__(self) -> TrainingWindows:
        return self

    def __next__(self) -> Window:
        if self.shuffle_buffer_length <= 1:
            return self._draw()
        while len(self._buffer) < self.shuffle_buffer_length:
            self._buffer.append(self._draw())
        return self._buffer.pop(int(self._rng.integers(len(self._buffer))))

    def _draw(self) -> Window:
        """The next window of a source picked with its probability."""
        file = 0
        if len(self.sources) > 1:
            file = int(np.searchsorted(self._cumulative, self._rng.random(), side="right"))
            file = min(file, len(self.sources) - 1)  # rounding: the cumulative sum may end < 1
        return self._next_window_of(file)

    def _next_window_of(self, file: int) -> Window:
        cursor, kept, source = self._cursors[file], self.kept[file], self.sources[file]
        while True:
            if cursor.position >= len(cursor.order):
                if cursor.cycle >= 0 and cursor.yielded == 0:
                    self._check_some_past_is_observed(file)
                cursor.start_cycle(int(self._rng.integers(2**32)), kept)
            series = int(cursor.order[cursor.position])
            cursor.position += 1
            last_cut = int(source.lengths[series]) - self.prediction_length
            cut = int(self._rng.integers(self.min_past, last_cut + 1))
            window = self.window(WindowId(file, series, cut, cursor.cycle))
            if np.isnan(window.past).all():
                self.report.sources[file].all_nan_past += 1
                continue
            cursor.yielded += 1
            return window

    def _check_some_past_is_observed(self, file: int) -> None:
        """After a pass without a window: raises unless some cut of some series has an
        observed past value (without augmentation), i.e. unless the pass was bad luck."""
        source = self.sources[file]
        for series in self.kept[file]:
            last_cut = int(source.lengths[series]) - self.prediction_length
            first = max(0, self.min_past - self.context_length)
            if not np.isnan(source.read(int(series), first, last_cut)).all():
                return
        raise DataError(
            f"none of its {len(self.kept[file])} usable series has an observed value in any "
            f"window's past (context_length={self.context_length}, min_past={self.min_past}, "
            f"prediction_length={self.prediction_length}): every window would be skipped",
            path=source.name,
        )

    def window(self, window_id: WindowId) -> Window:
        """Rebuilds the window with this identity (augmentation included)."""
        return extract_window(
            self.sources[window_id.file],
            WindowId(*window_id),
            self.context_length,
            self.prediction_length,
            self.drop_prob,
            self.seed,
        )

    def get_state(self) -> dict[str, Any]:
        """The stream's exact position, as a JSON-serialisable dict.

        Holds the generator state, each source's cursor (pass, position, and the
        seed of that pass' order), the shuffle buffer as window identities and the
        skipped-window counts.
        """
        return {
            "rng": generator_state(self._rng),
            "cursors": [cursor.get_state() for cursor in self._cursors],
            "buffer": [list(window.id) for window in self._buffer],
            "all_nan_past": [source.all_nan_past for source in self.report.sources],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a position saved by `get_state` (of a stream over the same data)."""
        if len(state["cursors"]) != len(self.sources):
            raise DataError(
                f"the state holds {len(state['cursors'])} sources; this data has "
                f"{len(self.sources)}"
            )
        buffer = [WindowId(*(int(v) for v in ids)) for ids in state["buffer"]]
        for window_id in buffer:
            valid = 0 <= window_id.file < len(self.sources)
            valid = valid and 0 <= window_id.series < self.sources[window_id.file].num_series
            if valid:
                length = int(self.sources[window_id.file].lengths[window_id.series])
                valid = self.min_past <= window_id.cut <= length - self.prediction_length
            if not valid:
                raise DataError(f"the state's window {window_id} is not in this data")
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = restore_generator_state(state["rng"])
        for cursor, cursor_state, kept in zip(
            self._cursors, state["cursors"], self.kept, strict=True
        ):
            cursor.set_state(cursor_state, kept)
        self._buffer = [self.window(window_id) for window_id in buffer]
        for source, count in zip(self.report.sources, state["all_nan_past"], strict=True):
            source.all_nan_past = int(count)


def check_probability(probability: Sequence[float] | None, num_sources: int) -> np.ndarray:
    """The mixing probabilities as a float64 array; uniform when `None`.

    Raises a `ValueError` naming `probability` unless it has one finite,
    non-negative entry per source and sums to 1 within 1e-6.
    """
    if num_sources < 1:
        raise ValueError("At least one data source is required. Received: no sources")
    if probability is None:
        return np.full(num_sources, 1.0 / num_sources)
    try:
        values = np.asarray(probability, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`probability` must be a list of numbers. Received: probability={probability!r}"
        ) from None
    if values.ndim != 1 or len(values) != num_sources:
        raise ValueError(
            f"`probability` must have one entry per data source ({num_sources}). "
            f"Received: probability={list(np.atleast_1d(values))}"
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"`probability` entries must be finite and non-negative. "
            f"Received: probability={values.tolist()}"
        )
    if not math.isclose(values.sum(), 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(
            f"`probability` must sum to 1 (within 1e-6). Received: probability={values.tolist()} "
            f"(sum {values.sum():.9g})"
        )
    return values


def kept_series(
    sources: Sequence[SeriesSource],
    min_past: int,
    prediction_length: int,
    max_missing_prop: float,
) -> tuple[list[np.ndarray], DataReport]:
    """`usable_series` of every source, and their `DataReport`; a named
    `DataError` for the first source with no usable series."""
    kept, reports = [], []
    for source in sources:
        usable, report = usable_series(source, min_past, prediction_length, max_missing_prop)
        if len(usable) == 0:
            raise_no_usable_series(report, min_past, prediction_length)
        kept.append(usable)
        reports.append(report)
    return kept, DataReport(reports)


def raise_no_usable_series(report: SourceReport, min_past: int, prediction_length: int) -> None:
    raise DataError(
        f"no usable series: of its {report.series} series, {report.too_short} are shorter than "
        f"min_past + prediction_length = {min_past + prediction_length} and "
        f"{report.too_many_missing} have too many missing values (max_missing_prop)",
        path=report.name,
    )


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """The state of a PCG64 generator as JSON-safe values (its 128-bit integers as strings)."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"Only PCG64 generators are supported. Received: {state['bit_generator']}")
    return {
        "bit_generator": "PCG64",
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def restore_generator_state(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `generator_state`: a dict for `bit_generator.state`."""
    return {
        "bit_generator": "PCG64",
        "state": {"state": int(state["state"]), "inc": int(state["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


class _Cursor:
    """Where a source's endless stream stands: its pass, position and pass order."""

    def __init__(self) -> None:
        self.cycle = -1  # no pass started
        self.position = 0
        self.order_seed = 0
        self.yielded = 0  # windows yielded in this pass
        self.order = np.zeros(0, dtype=np.int64)

    def start_cycle(self, order_seed: int, kept: np.ndarray) -> None:
        self.cycle += 1
        self.position = 0
        self.yielded = 0
        self.order_seed = order_seed
        self.order = np.random.default_rng(order_seed).permutation(kept)

    def get_state(self) -> dict[str, int]:
        return {
            "cycle": self.cycle,
            "position": self.position,
            "order_seed": self.order_seed,
            "yielded": self.yielded,
        }

    def set_state(self, state: dict[str, int], kept: np.ndarray) -> None:
        self.cycle = int(state["cycle"])
        self.position = int(state["position"])
        self.order_seed = int(state["order_seed"])
        self.yielded = int(state["yielded"])
        self.order = (
            np.random.default_rng(self.order_seed).permutation(kept)
            if self.cycle >= 0
            else np.zeros(0, dtype=np.int64)
        )
