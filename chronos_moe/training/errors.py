"""The errors of a training run, in one place (no Keras import: the command
line raises them before Keras is loaded).

Data errors are `chronos_moe.data.DataError`; config errors are
`chronos_moe.training.config.ConfigError`; checkpoint errors are in
`chronos_moe.training.checkpoint` (`CheckpointCorrupt`, `CheckpointSaveError`,
`NonFiniteCheckpoint`).
"""

from __future__ import annotations

from pathlib import Path


class RunError(RuntimeError):
    """A run that cannot start: an occupied output directory, a held lock, an
    incompatible resume, a config that asks for another backend."""


class TrainingStopped(Exception):
    """A run stopped by SIGTERM: the checkpoint of its last finished step is
    committed (`checkpoint`), and resuming continues it."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
