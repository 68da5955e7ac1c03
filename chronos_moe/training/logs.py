"""The files a training run logs into its output directory: `steps.jsonl` (one
line per step) and `log.csv` / `log.json` (one row per logging window)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.atomic import write_text_atomically

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "loss", "ce_loss", "lb_loss", "lr", "seconds")
STEPS_LOG = "steps.jsonl"  # one JSON line per training step


class StepsLog:
    """`steps.jsonl`: one JSON line per training step, appended as the step ends.

    Each line holds `step`, `ce_loss`, `lb_loss` (`null` for a dense model),
    `lr` (the learning rate the step used), `skipped` (a non-finite step whose
    update was not applied, `nan_policy: skip`) and `windows`, the identities
    `[file, series, cut, cycle]` of the batch's windows (see
    `chronos_moe.data.windows.WindowId`). Opened at `resume_step`, the lines of
    later steps (written before an interruption) are dropped, the file rewritten
    atomically: the log of a resumed run equals the uninterrupted run's.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.jsonl"
    >>> with StepsLog(path, 0) as log:
    ...     for step in (1, 2, 3):
    ...         log.append({"step": step})
    >>> with StepsLog(path, 2) as log:  # resumed from a checkpoint of step 2
    ...     pass
    >>> [line["step"] for line in read_steps(path)]
    [1, 2]
    """

    def __init__(self, path: str | os.PathLike, resume_step: int):
        self.path = Path(path)
        kept = [line for line in read_steps(self.path) if line["step"] <= resume_step]
        if [line["step"] for line in kept] != list(range(1, resume_step + 1)):
            logger.warning(
                "%s lacks steps of the run before step %d; it continues from there.",
                self.path,
                resume_step,
            )
        write_text_atomically(self.path, "".join(_json_line(line) for line in kept))
        self.handle = open(self.path, "a")

    def append(self, record: dict[str, Any]) -> None:
        self.handle.write(_json_line(record))
        self.handle.flush()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> StepsLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_steps(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a `steps.jsonl` (none if it is missing), up to a torn last line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            break  # the half-written line of a killed run
    return lines


def _json_line(record: dict[str, Any]) -> str:
    clean = {
        key: None if isinstance(value, float) and not np.isfinite(value) else value
        for key, value in record.items()
    }
    return json.dumps(clean, allow_nan=False) + "\n"


def read_log(path: str | os.PathLike, upto: int) -> list[dict[str, float]]:
    """The rows of a `log.csv` up to step `upto` (none if it is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    return [row for row in rows if row["step"] <= upto]


def write_log(output: str | os.PathLike, log: list[dict[str, float]]) -> None:
    """Rewrites `log.csv` and `log.json` whole, each atomically."""
    output = Path(output)
    with io.StringIO() as text:
        writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(log)
        write_text_atomically(output / "log.csv", text.getvalue())
    write_text_atomically(output / "log.json", json.dumps(log, indent=1))
