"""Optuna, imported on first use: `import chronos_moe` never imports it, and
without the `tune` extra the error says what to install."""

from __future__ import annotations

import importlib
from typing import Any

INSTALL_HINT = 'pip install "chronos-moe[tune]"'


class MissingTuneExtra(ImportError):
    """Optuna is not installed (the `tune` extra)."""


def import_optuna() -> Any:
    """The `optuna` module, or `MissingTuneExtra` naming the install command.

    Example:

    >>> import_optuna().__name__
    'optuna'
    """
    try:
        return importlib.import_module("optuna")
    except ImportError as error:
        raise MissingTuneExtra(
            f"Hyperparameter tuning needs Optuna, which is not installed: {INSTALL_HINT}"
        ) from error
