"""Hyperparameter search with Optuna (the `tune` extra:
`pip install "chronos-moe[tune]"`): the number of experts, `top_k`, the
routing and balancing settings and the learning rate, each trial scored by WQL
on a validation split.

* `SearchSpace` / `default_search_space`: what the trials sample, checked
  against the base config before any model is built (no Optuna needed);
* `make_objective`: base config -> trial config -> `train` -> WQL, with the
  training CE reported to Optuna's pruner (`PruningCallback`);
* `tune`: a resumable study in one directory (`study.db`, `best_config.yaml`,
  `trials.csv`, plots), as `chronos-moe tune` runs it.

Names are loaded on first use; `import chronos_moe` never imports Optuna, and
the names that need it raise `MissingTuneExtra` (an `ImportError` naming the
install command) when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Dimension": "chronos_moe.tuning.search_space",
    "SearchSpace": "chronos_moe.tuning.search_space",
    "SearchSpaceError": "chronos_moe.tuning.search_space",
    "default_search_space": "chronos_moe.tuning.search_space",
    "MissingTuneExtra": "chronos_moe.tuning.optuna_import",
    "PruningCallback": "chronos_moe.tuning.objective",
    "make_objective": "chronos_moe.tuning.objective",
    "trial_seed": "chronos_moe.tuning.objective",
    "TuneResult": "chronos_moe.tuning.study",
    "tune": "chronos_moe.tuning.study",
}
# The names that need Optuna itself.
_NEED_OPTUNA = {"PruningCallback", "make_objective", "TuneResult", "tune"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _NEED_OPTUNA:
        from chronos_moe.tuning.optuna_import import import_optuna

        import_optuna()
    return getattr(importlib.import_module(_NAMES[name]), name)
