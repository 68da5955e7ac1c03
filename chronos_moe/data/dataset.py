"""`ChronosDataset`: training and validation batches for `model.fit`: tokenized
for Chronos T5, the values themselves for Chronos-Bolt."""

from __future__ import annotations

import collections
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from chronos_moe.config import ChronosBoltConfig, ChronosConfig
from chronos_moe.data.arrow import ArrowSeriesFile
from chronos_moe.data.dataset_arguments import (
    check_dataset_arguments,
    check_finite,
    dataset_tokenizer,
)
from chronos_moe.data.errors import DataError
from chronos_moe.data.report import DataReport
from chronos_moe.data.source import make_sources
from chronos_moe.data.validation_windows import ValidationWindows
from chronos_moe.data.windows import (
    TrainingWindows,
    Window,
    WindowId,
    check_probability,
)
from chronos_moe.errors import IndivisibleBatchError
from chronos_moe.tokenizer import MeanScaleUniformBins

STATE_FORMAT = "chronos_moe.ChronosDataset/1"
# Training batches kept for repeated reads (Keras reads the first batch twice when
# it builds a model from data), and the spacing of saved stream states from which
# an older batch is recomputed.
_RECENT_BATCHES = 8
_SNAPSHOT_EVERY = 16
_SNAPSHOTS_KEPT = 64  # in an endless stream; with `steps` every snapshot is kept


class _Batch(NamedTuple):
    inputs: dict[str, np.ndarray]
    ids: list[WindowId]
    state_before: dict[str, Any]


class ChronosDataset(keras.utils.PyDataset):
    """Chronos training or validation batches, for `model.fit` on any backend.

    Reads one or more Arrow IPC files (memory-mapped, streamed: see
    `ArrowSeriesFile`) or in-memory series, cuts windows as the reference Chronos
    training script does (see `chronos_moe.data.windows`) and tokenizes them with
    the model's `MeanScaleUniformBins`. Each batch is a dict:

    * `input_ids`: int32 `(batch_size, context_length + 1)`, the past's tokens
      followed by EOS;
    * `attention_mask`: bool, same shape, `False` on missing values and padding;
    * `labels`: int32 `(batch_size, prediction_length + 1)`, the future's tokens
      (with the past's scale) followed by EOS, `-100` where a value is missing.

    Given a Chronos-Bolt model's `ChronosBoltConfig` instead, the same windows
    are passed on as values, as `ChronosBolt` reads them (it standardises them
    itself; see `ChronosBolt.forecast_loss`):

    * `context`: float32 `(batch_size, context_length)`, the past, NaN where
      missing and as left padding;
    * `target`: float32 `(batch_size, prediction_length)`, the future, NaN where
      missing.

    `mode="train"` is an endless stream (set `steps_per_epoch` in `fit`, or
    `steps` here for a finite one): windows are drawn at random, mixed by
    `probability` and shuffled. Batch `i` is a pure function of the seed, the
    data and `i`: reading an index twice gives the same batch, and
    `get_state()` / `set_state()` resume a stream exactly (restored, index 0 is
    the batch that would have come next). `mode="validation"` is one finite pass
    over the last window of every usable series, in order.

    Bad data fails at construction with a `DataError` naming the file (and row
    and field); `report` counts, per source, the series dropped and why.

    Args:
        paths_or_data: the data. A path (str or path-like) to an Arrow file, a
            list of paths (mixed by `probability`), a list of 1-D numpy arrays (one
            in-memory dataset), a 2-D array (rows are series), a pandas DataFrame in
            long format, a `SeriesSource`, or a list of paths, DataFrames and
            sources.
        tokenizer: `MeanScaleUniformBins`, `ChronosConfig` or
            `ChronosBoltConfig`. The model's tokenizer (`model.chronos_config`
            builds one); a `ChronosBoltConfig` gives Chronos-Bolt's batches.
        batch_size: int. Windows per batch. Defaults to `32`.
        probability: list of float. The chance of drawing from each source; one
            per source, non-negative, summing to 1. Defaults to uniform.
        context_length: int. Length of the past; defaults to the tokenizer's.
        prediction_length: int. Length of the future; defaults to the tokenizer's.
        min_past: int. Observations required before a cut point. Defaults to `64`.
        max_missing_prop: float. Series with a larger share of missing values are
            dropped. Defaults to `0.9`.
        shuffle_buffer_length: int. Size of the shuffle buffer (`0` turns it
            off). Defaults to `100`.
        mode: str. `"train"` or `"validation"`. Defaults to `"train"`.
        drop_prob: float. Largest share of values set to NaN per visit of a
            series (augmentation; training only). Defaults to `0.2` in training.
        seed: int. Seed of all randomness. Defaults to `0`.
        steps: int. Make the training stream finite: `steps` batches. Defaults
            to `None` (endless).
        id_column, timestamp_column, target_column: str. Column names of a
            long-format DataFrame. Default to `"id"`, `"timestamp"`, `"target"`.
        allow_inf: bool. Read ±inf target values as missing (they are counted in
            `report`) instead of refusing the data with a `DataError`. Defaults to
            `False`.
        workers, use_multiprocessing, max_queue_size: as for
            `keras.utils.PyDataset`. Batches are computed in the calling thread
            by default; multiprocessing is not supported (memory maps and exact
            determinism).

    Example:

    >>> import numpy as np
    >>> from chronos_moe.config import ChronosConfig
    >>> series = [np.sin(np.arange(200) / 5.0) + 2.0 for _ in range(8)]
    >>> config = ChronosConfig(context_length=32, prediction_length=8)
    >>> dataset = ChronosDataset(series, config, batch_size=4, min_past=16)
    >>> batch = dataset[0]
    >>> for name, value in batch.items():
    ...     print(name, value.shape, value.dtype)
    input_ids (4, 33) int32
    attention_mask (4, 33) bool
    labels (4, 9) int32
    >>> state = dataset.get_state()  # after one batch
    >>> upcoming = dataset[1]
    >>> restored = ChronosDataset(series, config, batch_size=4, min_past=16)
    >>> restored.set_state(state)
    >>> bool((restored[0]["input_ids"] == upcoming["input_ids"]).all())
    True
    >>> dataset.batch_identities(1) == restored.batch_identities(0)
    True
    """

    def __init__(
        self,
        paths_or_data: Any,
        tokenizer: MeanScaleUniformBins | ChronosConfig | ChronosBoltConfig,
        batch_size: int = 32,
        probability: Sequence[float] | None = None,
        context_length: int | None = None,
        prediction_length: int | None = None,
        min_past: int = 64,
        max_missing_prop: float = 0.9,
        shuffle_buffer_length: int = 100,
        mode: str = "train",
        drop_prob: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        id_column: str = "id",
        timestamp_column: str | None = "timestamp",
        target_column: str = "target",
        allow_inf: bool = False,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ) -> None:
        if use_multiprocessing:
            raise ValueError(
                "`use_multiprocessing=True` is not supported: batches must be computed where "
                "their order is kept. Received: use_multiprocessing=True"
            )
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        check_dataset_arguments(mode, batch_size, steps, drop_prob)
        # Chronos-Bolt reads the values themselves: no tokenizer (`None`).
        self.tokenizer, self.config = dataset_tokenizer(
            tokenizer, context_length, prediction_length
        )
        self.context_length = self.config.context_length
        self.prediction_length = self.config.prediction_length
        self.batch_size = int(batch_size)
        self.mode = mode
        self.steps = None if steps is None else int(steps)
        self.seed = seed
        self.sources = make_sources(
            paths_or_data,
            id_column=id_column,
            timestamp_column=timestamp_column,
            target_column=target_column,
        )
        check_probability(probability, len(self.sources))
        if not allow_inf:
            check_finite(self.sources)
        self._lock = threading.RLock()
        self._windows = self._make_windows(
            min_past, max_missing_prop, probability, shuffle_buffer_length, drop_prob
        )
        self._settings = self._describe(
            min_past, max_missing_prop, probability, shuffle_buffer_length
        )
        self.process_index, self.process_count = 0, 1

    def _make_windows(
        self, min_past, max_missing_prop, probability, shuffle_buffer_length, drop_prob
    ) -> TrainingWindows | ValidationWindows:
        """The window sampler of `mode`: random training windows (their stream
        started at step 0) or every series' last window for validation."""
        if self.mode != "train":
            return ValidationWindows(
                self.sources,
                context_length=self.context_length,
                prediction_length=self.prediction_length,
                min_past=min_past,
                max_missing_prop=max_missing_prop,
            )
        windows = TrainingWindows(
            self.sources,
            context_length=self.context_length,
            prediction_length=self.prediction_length,
            min_past=min_past,
            max_missing_prop=max_missing_prop,
            probability=probability,
            shuffle_buffer_length=shuffle_buffer_length,
            drop_prob=0.2 if drop_prob is None else drop_prob,
            seed=self.seed,
        )
        self._reset_stream(0, windows.get_state())
        return windows

    def shard(self, process_index: int, process_count: int) -> None:
        """Makes each training batch this process' rows of the global batch.

        Under data parallelism every process reads the same stream of global
        batches of `batch_size` windows (the same seed), and `dataset[i]` gives
        the `process_index`-th of `process_count` equal slices of batch `i`: the
        union over the processes is the batch one process would train on.
        `batch_identities`, `get_state` and `set_state` stay global.

        Raises `IndivisibleBatchError` when `process_count` does not divide
        `batch_size`.

        Example:

        >>> import numpy as np
        >>> from chronos_moe.config import ChronosConfig
        >>> series = [np.sin(np.arange(200) / 5.0) + 2.0 for _ in range(8)]
        >>> config = ChronosConfig(context_length=32, prediction_length=8)
        >>> whole = ChronosDataset(series, config, batch_size=4, min_past=16)
        >>> second = ChronosDataset(series, config, batch_size=4, min_past=16)
        >>> second.shard(1, 2)
        >>> second[0]["input_ids"].shape
        (2, 33)
        >>> bool((second[0]["input_ids"] == whole[0]["input_ids"][2:]).all())
        True
        """
        if self.mode != "train":
            raise ValueError(f"Only a training stream is sharded. Received: mode={self.mode!r}")
        if not 0 <= process_index < process_count:
            raise ValueError(
                "`process_index` must be in [0, process_count). Received: "
                f"process_index={process_index}, process_count={process_count}"
            )
        if self.batch_size % process_count:
            raise IndivisibleBatchError(
                "The number of processes must divide the global batch: each takes "
                f"batch_size / processes windows of every step. Received: processes="
                f"{process_count}, batch_size={self.batch_size}"
            )
        self.process_index, self.process_count = int(process_index), int(process_count)

    def _describe(self, min_past, max_missing_prop, probability, shuffle_buffer_length) -> dict:
        """The settings and sources this dataset was made with (JSON-ready)."""
        return {
            "mode": self.mode,
            "batch_size": self.batch_size,
            "context_length": self.context_length,
            "prediction_length": self.prediction_length,
            "min_past": int(min_past),
            "max_missing_prop": float(max_missing_prop),
            "probability": check_probability(probability, len(self.sources)).tolist(),
            "shuffle_buffer_length": int(shuffle_buffer_length),
            "drop_prob": getattr(self._windows, "drop_prob", 0.0),
            "seed": int(self.seed),
            "tokenizer": self.config.to_dict()
            if self.tokenizer is None
            else {
                **self.config.to_dict(),
                "low_limit": self.tokenizer.low_limit,
                "high_limit": self.tokenizer.high_limit,
            },
            "sources": [
                {
                    "name": os.path.basename(s.name),
                    "rows": r.rows,
                    "series": r.series,
                    "kept": r.kept,
                }
                for s, r in zip(self.sources, self._windows.report.sources, strict=True)
            ],
        }

    # ---- the PyDataset interface ---------------------------------------------------------

    @property
    def num_batches(self) -> int | None:
        if self.mode == "validation":
            return math.ceil(len(self._windows) / self.batch_size)
        return self.steps

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("An endless training ChronosDataset has no length (steps=None).")
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Batch `index`: a dict of `input_ids`, `attention_mask` and `labels`."""
        index = self._check_index(index)
        with self._lock:
            if self.mode == "validation":
                return self._tokenize(self._validation_windows(index))
            self._consumed = max(self._consumed, index + 1)
            inputs = self._batch_at(self._origin + index).inputs
        if self.process_count == 1:
            return inputs
        rows = self.batch_size // self.process_count
        first = self.process_index * rows
        return {name: value[first : first + rows] for name, value in inputs.items()}

    def batch_identities(self, index: int) -> list[WindowId]:
        """The identities `(file, series, cut, cycle)` of the windows of batch `index`.

        Two runs whose batches have equal identities saw exactly the same windows
        (a window is a pure function of its identity and the seed).
        """
        index = self._check_index(index)
        with self._lock:
            if self.mode == "validation":
                return [window.id for window in self._validation_windows(index)]
            return list(self._batch_at(self._origin + index).ids)

    @property
    def report(self) -> DataReport:
        """Per-source counts: rows, series, kept, dropped by reason, ±inf values, skipped
        windows."""
        return self._windows.report

    # ---- resuming ------------------------------------------------------------------------

    def get_state(self, index: int | None = None) -> dict[str, Any]:
        """The stream position before batch `index`, as a JSON-serialisable dict.

        Args:
            index: int. The next batch a restored dataset should produce (as its
                index 0). Defaults to the number of batches read so far (one past
                the highest index read). Pass it explicitly when batches were
                read ahead of training.

        Returns:
            A dict with the generator state, each source's cursor (pass, position,
            seed of the pass' order), the shuffle buffer as window identities, the
            absolute `position` (batches produced before it) and the dataset's
            settings (checked by `set_state`).
        """
        with self._lock:
            state = {"format": STATE_FORMAT, "settings": self._settings}
            if self.mode == "validation":
                return {**state, "position": 0 if index is None else int(index)}
            index = self._consumed if index is None else self._check_index(index, allow_end=True)
            position = self._origin + index
            if position == self._position:
                windows = self._windows.get_state()
            else:
                windows = self._batch_at(position).state_before
            return {**state, "position": position, "windows": windows}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a state of `get_state`: index 0 becomes the batch that was next.

        The dataset must read the same data with the same settings; otherwise a
        `DataError` lists what differs.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(
                f"not a ChronosDataset state (expected format {STATE_FORMAT!r}). Received "
                f"format {state.get('format') if isinstance(state, dict) else type(state)!r}"
            )
        differences = [
            f"{key}: {state['settings'].get(key)!r} -> {value!r}"
            for key, value in self._settings.items()
            if state["settings"].get(key) != value
        ]
        if differences:
            raise DataError(
                "the state belongs to a dataset with other data or settings (state -> this "
                "dataset): " + "; ".join(differences)
            )
        if self.mode == "validation":
            return
        with self._lock:
            self._windows.set_state(state["windows"])
            self._reset_stream(int(state["position"]), state["windows"])

    # ---- internals -----------------------------------------------------------------------

    def _reset_stream(self, position: int, windows_state: dict[str, Any]) -> None:
        self._origin = position  # absolute position of index 0
        self._position = position  # the next batch the window stream produces
        self._consumed = 0
        self._recent: collections.OrderedDict[int, _Batch] = collections.OrderedDict()
        self._snapshots = {position: windows_state}

    def _batch_at(self, position: int) -> _Batch:
        """The batch at an absolute stream position, computed, cached or recomputed."""
        batch = self._recent.get(position)
        if batch is not None:
            self._recent.move_to_end(position)
            return batch
        if position < self._position:  # rewind to the closest saved state before it
            start = max((p for p in self._snapshots if p <= position), default=None)
            if start is None:
                raise IndexError(
                    f"Batch {position - self._origin} is before this dataset's start and "
                    "cannot be recomputed."
                )
            self._windows.set_state(self._snapshots[start])
            self._position = start
        while self._position <= position:
            state = self._windows.get_state()
            if self._position % _SNAPSHOT_EVERY == 0:
                self._snapshots[self._position] = state
                self._prune_snapshots()
            windows = [next(self._windows) for _ in range(self.batch_size)]
            batch = _Batch(self._tokenize(windows), [w.id for w in windows], state)
            self._recent[self._position] = batch
            if len(self._recent) > _RECENT_BATCHES:
                self._recent.popitem(last=False)
            self._position += 1
        return batch

    def _prune_snapshots(self) -> None:
        if self.steps is None and len(self._snapshots) > _SNAPSHOTS_KEPT + 1:
            newer = sorted(p for p in self._snapshots if p != self._origin)
            for position in newer[:-_SNAPSHOTS_KEPT]:
                del self._snapshots[position]

    def _validation_windows(self, index: int) -> list[Window]:
        first = index * self.batch_size
        last = min(first + self.batch_size, len(self._windows))
        return [self._windows[k] for k in range(first, last)]

    def _tokenize(self, windows: list[Window]) -> dict[str, np.ndarray]:
        past = np.stack([window.past for window in windows])
        future = np.stack([window.future for window in windows])
        if self.tokenizer is None:  # Chronos-Bolt
            return {"context": past.astype(np.float32), "target": future.astype(np.float32)}
        input_ids, attention_mask, scale = self.tokenizer.context_input_transform(past)
        labels, label_mask = self.tokenizer.label_input_transform(future, scale)
        return {
            "input_ids": input_ids.astype(np.int32),
            "attention_mask": attention_mask,
            "labels": np.where(label_mask, labels, -100).astype(np.int32),
        }

    def _check_index(self, index: Any, allow_end: bool = False) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
            raise IndexError(f"Batch index must be a non-negative integer. Received: {index!r}")
        limit = self.num_batches
        if limit is not None and index > limit - (0 if allow_end else 1):
            raise IndexError(f"Batch index {index} out of range [0, {limit}).")
        return int(index)

    def close(self) -> None:
        """Closes the files' memory maps."""
        for source in self.sources:
            if isinstance(source, ArrowSeriesFile):
                source.close()

    def __repr__(self) -> str:
        return (
            f"ChronosDataset(mode={self.mode!r}, sources={len(self.sources)}, "
            f"batch_size={self.batch_size}, context_length={self.context_length}, "
            f"prediction_length={self.prediction_length})"
        )
