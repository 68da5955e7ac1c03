"""Dense vs Mixture-of-Experts: train both on the same data, seed and steps,
then report losses, speed, validation cross-entropy, forecast accuracy and
expert use."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from chronos_moe.training.config import ConfigError, TrainingConfig

SAMPLE_CONFIGS = ("chronos-t5-tiny-sample.yaml", "chronos-t5-tiny-moe-sample.yaml")

# `--quick`: the sample configs shrunk to finish in a few minutes on a laptop CPU
# (a shorter context and a 1024-token vocabulary make each step cheap).
QUICK_OVERRIDES: dict[str, Any] = {
    "context_length": 64,
    "prediction_length": 16,
    "min_past": 32,
    "n_tokens": 1024,
    "max_steps": 100,
    "save_steps": 100,
    "log_steps": 5,
    "per_device_train_batch_size": 32,
    "learning_rate": 1e-3,
}

# What the two runs of a comparison must share: the data, its windows, the seed,
# the number of steps and the batch size.
SHARED_KEYS = (
    "training_data_paths",
    "probability",
    "validation_data_paths",
    "context_length",
    "prediction_length",
    "min_past",
    "max_missing_prop",
    "shuffle_buffer_length",
    "max_steps",
    "per_device_train_batch_size",
    "seed",
)

# The files of a comparison in its output directory (another comparison's files
# are only replaced with `overwrite`).
OUTPUTS = ("report.md", "summary.json", "training_curves.png", "dense", "moe", "experts", "data")


def sample_config(name: str) -> TrainingConfig:
    """One of the bundled sample configs (`SAMPLE_CONFIGS`).

    Example:

    >>> sample_config("chronos-t5-tiny-moe-sample.yaml").num_experts
    4
    """
    import yaml

    text = resources.files("chronos_moe.configs").joinpath(name).read_text()
    return TrainingConfig.from_dict(yaml.safe_load(text))


def make_demo_data(
    directory: Path, prediction_length: int, num_series: int = 200, seed: int = 0
) -> tuple[Path, Path]:
    """Writes `train.arrow` (each series without its last `prediction_length`
    points) and `test.arrow` (whole series) of generated demo series (hourly:
    seasonality 24 for the baselines).

    Returns:
        `(train_path, test_path)`.
    """
    from chronos_moe.data import generate_sample_series, write_arrow

    directory.mkdir(parents=True, exist_ok=True)
    series = generate_sample_series(num_series=num_series, length=400, seed=seed)
    train_path, test_path = directory / "train.arrow", directory / "test.arrow"
    write_arrow([s[:-prediction_length] for s in series], train_path)
    write_arrow(series, test_path)
    return train_path, test_path


@dataclasses.dataclass
class RunSummary:
    """One side of a comparison.

    Attributes:
        name: str. `"dense"` or `"moe"`.
        final_ce: float. Training cross-entropy of the last logged interval.
        validation_ce: float. Cross-entropy on the last window of every
            evaluation series.
        seconds_per_step: float. Wall time per training step after the first
            logged interval (which includes compilation).
        log: the run's log rows (`TrainResult.log`).
        accuracy: `EvaluationResult` of the trained model on the evaluation data.
        utilization: each expert's share of the routing slots (MoE only).
    """

    name: str
    final_ce: float
    validation_ce: float
    seconds_per_step: float
    log: list[dict[str, float]]
    accuracy: Any
    utilization: list[float] | None = None


def compare(
    output_dir: str | Path,
    dense_config: TrainingConfig | None = None,
    moe_config: TrainingConfig | None = None,
    quick: bool = False,
    overwrite: bool = False,
    verbose: bool = True,
    num_samples: int | None = None,
    max_steps: int | None = None,
) -> Path:
    """Trains a dense and a MoE model on the same data, seed and steps and writes
    a report.

    Without configs, the bundled sample configs train on generated demo data
    (`data/train.arrow`: every series but its last `prediction_length` points;
    `data/test.arrow`: the whole series, whose last points are held out). Given
    one config, the other is the same with `use_moe` flipped. Given both, they
    must agree on `SHARED_KEYS`. Accuracy is measured on `validation_data_paths`
    (the demo test file), else on the training files (then the report says the
    points were not held out).

    Writes into `output_dir`: `dense/` and `moe/` (each a `train` output
    directory), `report.md` with `training_curves.png` (CE and LB curves) and
    `utilization.png`, `experts/` (the MoE model's routing report) and
    `summary.json`. The report holds the final training and validation CE, the
    time per step, the forecast accuracy table (WQL and MASE of both models, the
    Naive and Seasonal Naive baselines and the scores relative to Seasonal
    Naive) and the experts' utilisation.

    Args:
        output_dir: str or Path. Where everything is written.
        dense_config, moe_config: TrainingConfig. The runs; `None` takes the
            sample config (or the other config with `use_moe` flipped).
        quick: bool. Shrink the runs (`QUICK_OVERRIDES`: context 64, 1024
            tokens, 100 steps of 32 windows) to finish in a few minutes on a
            laptop CPU. Defaults to `False`.
        overwrite: bool. Replace an earlier comparison in `output_dir`.
            Defaults to `False` (refused with a `RunError`).
        verbose: bool. Progress bars and messages. Defaults to `True`.
        num_samples: int. Sample paths per forecast in the accuracy evaluation;
            `None` takes the model's default (20). Defaults to `None`.
        max_steps: int. Train each model this many steps (checkpoint and log
            intervals shortened to fit), after `quick`; `None` keeps the
            configs'. Defaults to `None`.

    Returns:
        The path of `report.md`.
    """
    from chronos_moe.training.errors import RunError

    output = Path(output_dir)
    earlier = [name for name in OUTPUTS if (output / name).exists()]
    if earlier and not overwrite:
        raise RunError(
            f"{output} holds an earlier comparison ({', '.join(earlier)}). Use --overwrite to "
            "replace it or choose another output directory."
        )
    demo = dense_config is None and moe_config is None
    dense_config, moe_config = _paired_configs(dense_config, moe_config)
    if quick:
        dense_config, moe_config = _quick(dense_config), _quick(moe_config)
    if max_steps is not None:
        dense_config, moe_config = (
            config.replace(
                max_steps=max_steps,
                save_steps=min(config.save_steps, max_steps),
                log_steps=min(config.log_steps, max_steps),
            )
            for config in (dense_config, moe_config)
        )
    held_out = True
    if demo:
        train_path, test_path = make_demo_data(output / "data", dense_config.prediction_length)
        shared = {
            "training_data_paths": [str(train_path)],
            "probability": [1.0],
            "validation_data_paths": [str(test_path)],
        }
        dense_config, moe_config = dense_config.replace(**shared), moe_config.replace(**shared)
    elif not dense_config.validation_data_paths:
        held_out = False
    evaluation_paths = dense_config.validation_data_paths or dense_config.training_data_paths

    runs = []
    for name, config in (("dense", dense_config), ("moe", moe_config)):
        config = config.replace(output_dir=str(output / name))
        runs.append(
            _train_and_score(name, config, evaluation_paths, overwrite, verbose, num_samples)
        )
    return _write_report(output, runs, dense_config, moe_config, evaluation_paths, held_out)


def _paired_configs(
    dense: TrainingConfig | None, moe: TrainingConfig | None
) -> tuple[TrainingConfig, TrainingConfig]:
    """The two configs of a comparison, checked to differ only where they may."""
    if dense is None and moe is None:
        dense, moe = sample_config(SAMPLE_CONFIGS[0]), sample_config(SAMPLE_CONFIGS[1])
    elif dense is None:
        dense = moe.replace(use_moe=False)
    elif moe is None:
        moe = dense.replace(use_moe=True)
    if dense.use_moe or not moe.use_moe:
        raise ConfigError(
            "compare needs a dense config (`use_moe: false`) and a MoE config "
            f"(`use_moe: true`). Received: use_moe={dense.use_moe} (dense config), "
            f"use_moe={moe.use_moe} (MoE config)"
        )
    differences = [
        f"{key}: {getattr(dense, key)!r} (dense) vs {getattr(moe, key)!r} (MoE)"
        for key in SHARED_KEYS
        if getattr(dense, key) != getattr(moe, key)
    ]
    if differences:
        raise ConfigError(
            "compare trains both models on the same data, seed and steps; the configs "
            "differ in: " + "; ".join(differences)
        )
    return dense, moe


def _quick(config: TrainingConfig) -> TrainingConfig:
    """`config` with `QUICK_OVERRIDES`; a pretrained model keeps its vocabulary."""
    overrides = dict(QUICK_OVERRIDES)
    if not config.random_init:
        overrides.pop("n_tokens", None)
    return config.replace(**overrides)


def _train_and_score(
    name: str,
    config: TrainingConfig,
    evaluation_paths: list[str],
    overwrite: bool,
    verbose: bool,
    num_samples: int | None,
) -> RunSummary:
    from chronos_moe.evaluation import analyze_routing, evaluate, write_routing_report
    from chronos_moe.pipeline import ChronosPipeline
    from chronos_moe.training.run import build_dataset, train

    if verbose:
        print(f"== {name}: {config.max_steps} steps ==")
    result = train(config, overwrite=overwrite, verbose=verbose)
    validation = build_dataset(config, mode="validation", paths=evaluation_paths)
    scores = result.model.evaluate(validation, return_dict=True, verbose=0)
    validation.close()
    pipeline = ChronosPipeline(result.model)
    if verbose:
        print(f"Forecasting the last {config.prediction_length} points of each series")
    accuracy = evaluate(
        pipeline,
        evaluation_paths,
        config.prediction_length,
        num_samples=num_samples,
        seed=config.seed,
        verbose=int(verbose),
    )
    utilization = None
    if config.use_moe:
        analysis = analyze_routing(pipeline, evaluation_paths)
        output = Path(config.output_dir).parent
        write_routing_report(analysis, output / "experts", title="Expert analysis: MoE run")
        utilization = analysis.utilization.tolist()
    return RunSummary(
        name=name,
        final_ce=result.log[-1]["ce_loss"],
        validation_ce=float(scores.get("ce_loss", scores["loss"])),
        seconds_per_step=seconds_per_step(result.log),
        log=result.log,
        accuracy=accuracy,
        utilization=utilization,
    )


def seconds_per_step(log: list[dict[str, float]]) -> float:
    """Wall time per step between the first and the last logged step (so the
    first interval, which holds compilation and warm-up, is left out); with a
    single row, over the whole run.

    Example:

    >>> seconds_per_step([{"step": 5, "seconds": 9.0}, {"step": 10, "seconds": 10.0}])
    0.2
    """
    if not log:
        return math.nan
    first, last = log[0], log[-1]
    if last["step"] > first["step"]:
        return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])
    return last["seconds"] / max(last["step"], 1)


def _write_report(
    output: Path,
    runs: list[RunSummary],
    dense: TrainingConfig,
    moe: TrainingConfig,
    evaluation_paths: list[str],
    held_out: bool,
) -> Path:
    """`report.md` with its figures, and `summary.json`, into `output`."""
    from chronos_moe.atomic import write_text_atomically
    from chronos_moe.evaluation import plot_expert_utilization, plot_training_curves

    plot_training_curves({run.name: run.log for run in runs}, output / "training_curves.png")
    files = ", ".join(f"`{Path(p).name}`" for p in evaluation_paths)
    lines = _training_section(runs, dense, moe, files) + _accuracy_section(
        runs, dense, files, held_out
    )
    utilization = runs[1].utilization
    if utilization is not None:
        plot_expert_utilization(utilization, path=output / "utilization.png")
        shares = ", ".join(f"expert {i}: {u:.1%}" for i, u in enumerate(utilization))
        lines += [
            "## Expert utilisation",
            "",
            f"Share of the routing slots (series × top-{moe.num_active_experts}) of the "
            f"evaluation series: {shares}. The full routing analysis: "
            "[experts/report.md](experts/report.md).",
            "",
            "![utilisation](utilization.png)",
            "",
        ]
    report = output / "report.md"
    write_text_atomically(report, "\n".join(lines))
    summary = {
        run.name: {
            "final_ce": run.final_ce,
            "validation_ce": run.validation_ce,
            "seconds_per_step": run.seconds_per_step,
            "relative_wql": run.accuracy.relative_wql,
            "relative_mase": run.accuracy.relative_mase,
            "accuracy": run.accuracy.rows(),
            "utilization": run.utilization,
            "log": run.log,
        }
        for run in runs
    }
    write_text_atomically(output / "summary.json", json.dumps(summary, indent=1))
    return report


def _training_section(
    runs: list[RunSummary], dense: TrainingConfig, moe: TrainingConfig, files: str
) -> list[str]:
    """The report's title, the shared settings and the training table."""
    from chronos_moe.backend import backend_info

    info = backend_info()
    lines = [
        "# Dense vs Mixture-of-Experts Chronos",
        "",
        f"Both runs: {dense.max_steps} steps, batch {dense.per_device_train_batch_size}, "
        f"context {dense.context_length}, prediction {dense.prediction_length}, seed {dense.seed}, "
        f"model `{dense.model_id}`. MoE: {moe.num_experts} experts, top-{moe.num_active_experts}, "
        f"balance weight {moe.load_balancing_weight}. Keras backend {info['backend']} "
        f"on {info['device']}.",
        "",
        "## Training",
        "",
        "| model | final train CE | validation CE | s / step | time vs dense |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        ratio = run.seconds_per_step / runs[0].seconds_per_step
        lines.append(
            f"| {run.name} | {run.final_ce:.4f} | {run.validation_ce:.4f} | "
            f"{run.seconds_per_step:.3f} | {ratio:.2f}x |"
        )
    return lines + [
        "",
        "Train CE: mean over the last logged interval. Validation CE: the last window of every "
        f"series of {files}. Time per step: after the first logged interval (compilation).",
        "",
        "![training curves](training_curves.png)",
        "",
    ]


def _accuracy_section(
    runs: list[RunSummary], dense: TrainingConfig, files: str, held_out: bool
) -> list[str]:
    """The forecast accuracy table of both runs and the baselines."""
    from chronos_moe.evaluation import markdown_comparison

    return [
        "## Forecast accuracy",
        "",
        f"The last {dense.prediction_length} points of every series of {files}"
        + (
            ", held out from training."
            if held_out
            else " — **not held out**: no `validation_data_paths` were given, so these are "
            "points the models trained on."
        ),
        "WQL (quantiles 0.1 … 0.9) and MASE; the relative scores divide by Seasonal Naive's "
        "(geometric mean over datasets): below 1 beats Seasonal Naive.",
        "",
        markdown_comparison({run.name: run.accuracy for run in runs}),
        "",
    ]
