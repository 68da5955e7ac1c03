"""The objective of a tuning study: one trial's config, trained with
`chronos_moe.training.train` in its own directory and scored by WQL on the
validation split.

Each trial starts from a fresh Keras session and its own seed (the base
config's `seed` plus the trial number), recorded in the trial's user attributes
and in its `config.yaml`; the training CE, averaged over each `log_steps`
window, is reported to Optuna so that a pruner can stop a poor trial early.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.tuning.optuna_import import import_optuna
from chronos_moe.tuning.search_space import SearchSpace

TRIALS = "trials"


class PruningCallback(keras.callbacks.Callback):
    """Reports the mean training CE of every `every` steps to an Optuna trial
    (`trial.report(ce, step)`) and raises `optuna.TrialPruned` when the trial's
    pruner says so.

    Args:
        trial: `optuna.Trial`. The trial to report to.
        every: int. Steps per reported value.

    Example:

    >>> import optuna
    >>> study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    >>> callback = PruningCallback(study.ask(), every=2)
    >>> for step in range(4):
    ...     callback.on_train_batch_end(step, {"ce_loss": 1.0 + step})
    >>> callback.reported
    [(2, 1.5), (4, 3.5)]
    """

    def __init__(self, trial: Any, every: int):
        super().__init__()
        self.trial = trial
        self.every = every
        self.step = 0
        self.window: list[float] = []
        self.reported: list[tuple[int, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        ce = (logs or {}).get("ce_loss", (logs or {}).get("loss"))
        if ce is not None and np.isfinite(float(ce)):
            self.window.append(float(ce))
        if self.step % self.every or not self.window:
            return
        value = float(np.mean(self.window))
        self.window = []
        self.trial.report(value, self.step)
        self.reported.append((self.step, value))
        if self.trial.should_prune():
            raise import_optuna().TrialPruned(f"pruned at step {self.step} (train CE {value:.4f})")


def trial_seed(base: TrainingConfig, number: int) -> int:
    """The seed of trial `number`: the base config's seed plus the trial number.

    Example:

    >>> trial_seed(TrainingConfig(training_data_paths=["a.arrow"], seed=42), 3)
    45
    """
    return (base.seed + number) % 2**32


def validation_paths(base: TrainingConfig) -> list[str]:
    """The validation split the trials are scored on (`validation_data_paths`)."""
    if not base.validation_data_paths:
        raise ConfigError(
            "Tuning scores every trial on held-out data: set `validation_data_paths` in the "
            "base config (series whose last `prediction_length` points each trial forecasts). "
            "Received: validation_data_paths=None"
        )
    return list(base.validation_data_paths)


def make_objective(
    base: TrainingConfig,
    output_dir: str | Path,
    space: SearchSpace | None = None,
    num_samples: int | None = None,
    verbose: bool = False,
) -> Callable[[Any], float]:
    """An Optuna objective: a trial's config, trained and scored by WQL.

    Each call draws the trial's values from `space` (define-by-run, so `top_k`
    never exceeds the trial's `num_experts`), clears the Keras session, trains
    `base` with those values and the seed `trial_seed(base, trial.number)` in
    `output_dir/trials/trial-NNNN/` (with `chronos_moe.training.train`, its
    guarantees included), reports the training CE every `log_steps` to the
    trial's pruner, and returns the model's WQL on the last
    `prediction_length` points of every series of `validation_data_paths`
    (averaged over the files). The trial's user attributes record its seed,
    its config, its WQL, MASE and last training CE.

    Args:
        base: TrainingConfig. The run every trial starts from; needs
            `validation_data_paths`.
        output_dir: str or Path. The study's directory.
        space: SearchSpace. What the trials sample. Defaults to
            `SearchSpace.default(base)`.
        num_samples: int. Sample paths per forecast in the WQL evaluation;
            `None` takes the config's `num_samples`. Defaults to `None`.
        verbose: bool. The training runs' progress output. Defaults to `False`.

    Returns:
        A function `trial -> WQL` for `study.optimize`.

    Example:

    >>> import tempfile, optuna
    >>> from chronos_moe import ChronosT5, checkpoints
    >>> from chronos_moe.data import generate_sample_series, write_arrow
    >>> folder = tempfile.mkdtemp()
    >>> series = generate_sample_series(8, 60, seed=0)
    >>> train_path = write_arrow([s[:-4] for s in series], f"{folder}/train.arrow")
    >>> test_path = write_arrow(series, f"{folder}/test.arrow")
    >>> small = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, d_model=16,
    ...     d_ff=32, num_heads=2, d_kv=8, chronos_config={"n_tokens": 64})
    >>> _ = checkpoints.save_chronos(small, f"{folder}/start")
    >>> base = TrainingConfig(training_data_paths=[str(train_path)],
    ...     validation_data_paths=[str(test_path)], model_id=f"{folder}/start",
    ...     random_init=False, n_tokens=64, context_length=16, prediction_length=4,
    ...     min_past=8, per_device_train_batch_size=4, max_steps=2, save_steps=2,
    ...     log_steps=1, use_moe=True, router_hidden_dim=8, num_samples=4)
    >>> space = SearchSpace.from_dict({"num_experts": {"type": "int", "low": 2, "high": 3}})
    >>> objective = make_objective(base, folder, space)
    >>> wql = objective(optuna.trial.FixedTrial({"num_experts": 2}, number=0))
    >>> bool(wql > 0)
    True
    """
    space = space or SearchSpace.default(base)
    space.check(base)
    paths = validation_paths(base)
    output = Path(output_dir)

    def objective(trial: Any) -> float:
        from chronos_moe.evaluation import evaluate
        from chronos_moe.pipeline import ChronosPipeline
        from chronos_moe.training.run import train

        values = space.suggest(trial, base)
        seed = trial_seed(base, trial.number)
        config = base.replace(
            **values,
            seed=seed,
            output_dir=str(output / TRIALS / f"trial-{trial.number:04d}"),
        )
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("config", config.to_dict())
        # A fresh session and the trial's seed: nothing of an earlier trial (layer
        # name counters, random state, a global dtype policy) reaches this one.
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        pruning = PruningCallback(trial, every=config.log_steps)
        result = train(config, overwrite=True, verbose=verbose, callbacks=[pruning])
        accuracy = evaluate(
            ChronosPipeline(result.model),
            paths,
            config.prediction_length,
            num_samples=num_samples,
            seed=seed,
            verbose=0,
        )
        wql = float(np.mean([dataset.scores["model"]["wql"] for dataset in accuracy.datasets]))
        mase = float(np.mean([dataset.scores["model"]["mase"] for dataset in accuracy.datasets]))
        trial.set_user_attr("wql", wql)
        trial.set_user_attr("mase", mase)
        if result.log:
            trial.set_user_attr("train_ce", float(result.log[-1]["ce_loss"]))
        return wql

    return objective
