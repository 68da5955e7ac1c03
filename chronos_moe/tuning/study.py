"""A tuning study in one directory: the Optuna study in `study.db` (SQLite, so
running again resumes it and several processes can share it), one training
directory per trial, the best config as YAML, the trials as CSV and the
optimisation plots."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from chronos_moe.atomic import write_atomically, write_text_atomically
from chronos_moe.training.config import TrainingConfig
from chronos_moe.training.errors import RunError
from chronos_moe.tuning.objective import TRIALS, make_objective, validation_paths
from chronos_moe.tuning.optuna_import import import_optuna
from chronos_moe.tuning.search_space import SearchSpace

logger = logging.getLogger(__name__)

STUDY_DB = "study.db"
STUDY_NAME = "chronos-moe"
BEST_CONFIG = "best_config.yaml"
TRIALS_CSV = "trials.csv"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
# What a study directory may hold (another directory is refused).
OUTPUTS = (STUDY_DB, BEST_CONFIG, TRIALS_CSV, HISTORY_PLOT, IMPORTANCE_PLOT, TRIALS)


@dataclasses.dataclass
class TuneResult:
    """What `tune` produced.

    Attributes:
        study: `optuna.Study`. Every trial so far, resumed ones included.
        best_config: TrainingConfig or None. The base config with the best
            trial's values and seed (`None` while no trial has completed).
        best_config_path: Path or None. `best_config.yaml`.
        plots: list of Path. The figures written.
        messages: list of str. What could not be written and why (such as the
            parameter importances of fewer than two completed trials).
    """

    study: Any
    best_config: TrainingConfig | None
    best_config_path: Path | None
    plots: list[Path]
    messages: list[str]


def check_output_dir(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds a study to resume; a directory (or file)
    holding anything else is a `RunError`."""
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise RunError(f"--output-dir {output} is a file; expected a directory for the study.")
    if not output.is_dir():
        return False
    entries = sorted(p.name for p in output.iterdir() if not p.name.startswith("."))
    other = [name for name in entries if name not in OUTPUTS]
    if other or (entries and STUDY_DB not in entries):
        raise RunError(
            f"{output} holds files of something other than a tuning study "
            f"({', '.join(other or entries)}); choose another output directory."
        )
    return bool(entries)


def _study_settings(base: TrainingConfig, space: SearchSpace) -> dict[str, Any]:
    """What a resumed study must share with the study in its directory."""
    config = base.to_dict()
    config.pop("output_dir")
    return {"base_config": config, "search_space": space.to_dict()}


def tune(
    base: TrainingConfig,
    output_dir: str | Path,
    trials: int,
    space: SearchSpace | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    pruner: Any = None,
    num_samples: int | None = None,
    verbose: bool = True,
) -> TuneResult:
    """Searches the number of experts, routing and optimisation settings of
    `base` with Optuna, scoring each trial by WQL on `validation_data_paths`.

    The study lives in `output_dir/study.db`: running `tune` again on the same
    directory (with the same base config and space) resumes it and runs trials
    until `trials` have completed or been pruned; trials that failed (such as
    a diverged loss) or were interrupted are not counted, so they are run
    again. Each trial trains in `output_dir/trials/trial-NNNN/` (see
    `make_objective`). Afterwards `tune` writes `best_config.yaml` (the base
    config with the best trial's values and seed and the base `output_dir`,
    ready for `chronos-moe train`), `trials.csv`, `optimization_history.png`
    and, with at least two completed trials, `param_importances.png`.

    Everything is checked before a study is created or a model built: the base
    config (with `validation_data_paths` and existing data files), the search
    space against it (`top_k <= num_experts` in every trial) and the output
    directory (a directory holding anything but a study is refused, as is a
    study of another base config or space).

    Args:
        base: TrainingConfig. The run each trial starts from; `max_steps` is
            each trial's budget.
        output_dir: str or Path. The study's directory.
        trials: int. Completed (or pruned) trials the study should hold.
        space: SearchSpace. Defaults to `SearchSpace.default(base)`.
        timeout: float. Stop starting trials after this many seconds.
            Defaults to `None` (no limit).
        seed: int. The sampler's seed. Defaults to the base config's `seed`.
        pruner: `optuna.pruners.BasePruner`. Defaults to a `MedianPruner`
            (after 2 completed trials, from the second reported CE).
        num_samples: int. Sample paths per forecast when scoring. Defaults to
            the config's `num_samples`.
        verbose: bool. One line per trial. Defaults to `True`.

    Returns:
        `TuneResult`.
    """
    space = space or SearchSpace.default(base)
    check_tune_inputs(base, space, trials)
    resuming = check_output_dir(output_dir)
    optuna = import_optuna()
    output = Path(output_dir)
    settings = _study_settings(base, space)
    storage = f"sqlite:///{(output / STUDY_DB).resolve()}"
    if resuming:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        _check_same_study(study, settings, output)
    output.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.seed if seed is None else seed),
        # Reports come every `log_steps` steps: pruning starts at the second report.
        pruner=pruner
        or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=base.log_steps),
    )
    if not resuming:
        for key, value in settings.items():
            study.set_user_attr(key, value)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, trials - done)
    if verbose:
        print(
            f"chronos-moe tune: {done} of {trials} trials done"
            + (f", running {remaining} more" if remaining else "")
            + f" (study {output / STUDY_DB})"
        )
    objective = make_objective(base, output, space, num_samples=num_samples)
    callbacks = [_print_trial] if verbose else []
    if remaining:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            catch=(FloatingPointError,),  # a diverged trial fails; the study goes on
            callbacks=callbacks,
            gc_after_trial=True,
        )
    return write_results(study, base, output, verbose=verbose)


def check_tune_inputs(base: TrainingConfig, space: SearchSpace, trials: int) -> None:
    """The checks `tune` makes before any work (see `tune`)."""
    from chronos_moe.training.config import ConfigError

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"`trials` must be a positive integer. Received: trials={trials!r}")
    for key in ("training_data_paths", "validation_data_paths"):
        paths = getattr(base, key) if key != "validation_data_paths" else validation_paths(base)
        for path in paths:
            if not Path(path).is_file():
                raise ConfigError(f"`{key}`: {path} does not exist. Received: {key}={paths}")
    space.check(base)


def _check_same_study(study: Any, settings: dict[str, Any], output: Path) -> None:
    stored = {key: study.user_attrs.get(key) for key in settings}
    changed = [
        key
        for key in settings
        if yaml.safe_dump(stored[key], sort_keys=True)
        != yaml.safe_dump(settings[key], sort_keys=True)
    ]
    if changed:
        details = []
        if "base_config" in changed:
            old, new = stored["base_config"] or {}, settings["base_config"]
            details = [
                f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
                for key in sorted(set(old) | set(new))
                if old.get(key) != new.get(key)
            ]
        raise RunError(
            f"{output} holds a study of another "
            + " and ".join(key.replace("_", " ") for key in changed)
            + (f" (old -> new: {'; '.join(details)})" if details else "")
            + "; resume it with the same ones or choose another output directory."
        )


def _print_trial(study: Any, trial: Any) -> None:
    value = "" if trial.value is None else f" WQL {trial.value:.4f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    print(f"trial {trial.number}: {trial.state.name.lower()}{value} ({params})")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_results(
    study: Any, base: TrainingConfig, output: Path, verbose: bool = True
) -> TuneResult:
    """Writes `best_config.yaml`, `trials.csv` and the plots of `study` into `output`."""
    optuna = import_optuna()
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    messages: list[str] = []
    best_config = best_path = None
    if completed:
        best = min(completed, key=lambda t: t.value if math.isfinite(t.value) else math.inf)
        values = dict(best.user_attrs["config"], output_dir=base.output_dir)
        best_config = TrainingConfig.from_dict(values)
        best_path = output / BEST_CONFIG
        header = (
            f"# chronos-moe tune: trial {best.number} of {output / STUDY_DB}, "
            f"validation WQL {best.value:.6g}, seed {best.user_attrs['seed']}.\n"
        )
        write_text_atomically(best_path, header + best_config.to_yaml())
    else:
        messages.append("No trial has completed yet: no best config.")
    frame = study.trials_dataframe().drop(columns=["user_attrs_config"], errors="ignore")
    write_text_atomically(output / TRIALS_CSV, frame.to_csv(index=False))
    plots = _write_plots(study, output, len(completed), messages)
    if verbose:
        if best_config is not None:
            print(f"Best trial {best.number}: WQL {best.value:.4f}, config {best_path}")
        for message in messages:
            print(f"chronos-moe tune: {message}")
    return TuneResult(study, best_config, best_path, plots, messages)


def _importance_evaluator(optuna: Any) -> Any:
    """fANOVA (Optuna's default) when scikit-learn is installed, else PED-ANOVA,
    which needs only numpy and SciPy."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _write_plots(study: Any, output: Path, completed: int, messages: list[str]) -> list[Path]:
    """The optimisation history and (with two completed trials) the parameter
    importances, via `optuna.visualization.matplotlib`."""
    optuna = import_optuna()
    try:
        from optuna.visualization import matplotlib as plots
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        messages.append("No plots: optuna.visualization.matplotlib needs matplotlib.")
        return []
    import matplotlib.pyplot as plt

    written = []
    figures = [(HISTORY_PLOT, plots.plot_optimization_history)]
    if completed >= 2:
        evaluator = _importance_evaluator(optuna)
        figures.append(
            (
                IMPORTANCE_PLOT,
                lambda study: plots.plot_param_importances(study, evaluator=evaluator),
            )
        )
    else:
        messages.append(
            f"Parameter importances need at least 2 completed trials ({completed} so far): "
            f"no {IMPORTANCE_PLOT}."
        )
    for name, plot in figures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ImportError) as error:  # e.g. nothing varied
                messages.append(f"No {name}: {error}")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        write_atomically(
            output / name, lambda path, figure=figure: figure.savefig(path, format="png", dpi=100)
        )
        plt.close(figure)
        written.append(output / name)
    return written
