"""Dense vs Mixture-of-Experts: train both on the same data, seed and steps,
then report losses, speed, validation cross-entropy, expert use and accuracy."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.training.config import TrainingConfig

SAMPLE_CONFIGS = ("chronos-t5-tiny-sample.yaml", "chronos-t5-tiny-moe-sample.yaml")

# `--quick`: the sample configs shrunk to finish in a few minutes on a laptop CPU.
QUICK_OVERRIDES: dict[str, Any] = {
    "context_length": 128,
    "prediction_length": 16,
    "min_past": 32,
    "max_steps": 60,
    "save_steps": 60,
    "log_steps": 5,
    "per_device_train_batch_size": 16,
    "learning_rate": 1e-3,
}


def sample_config(name: str) -> TrainingConfig:
    """One of the bundled sample configs (`SAMPLE_CONFIGS`)."""
    text = resources.files("chronos_moe.configs").joinpath(name).read_text()
    import yaml

    return TrainingConfig.from_dict(yaml.safe_load(text))


def make_demo_data(directory: Path, prediction_length: int, num_series: int = 200, seed: int = 0):
    """Writes `train.arrow` (each series without its last `prediction_length`
    points) and `test.arrow` (whole series) of generated demo series."""
    from chronos_moe.data import generate_sample_series, write_arrow

    directory.mkdir(parents=True, exist_ok=True)
    series = generate_sample_series(num_series=num_series, length=400, seed=seed)
    train_path, test_path = directory / "train.arrow", directory / "test.arrow"
    write_arrow([s[:-prediction_length] for s in series], train_path)
    write_arrow(series, test_path)
    return train_path, test_path


@dataclasses.dataclass
class RunSummary:
    name: str
    final_ce: float
    validation_ce: float
    seconds_per_step: float
    log: list[dict[str, float]]
    utilization: list[float] | None


def compare(
    output_dir: str | Path,
    dense_config: TrainingConfig | None = None,
    moe_config: TrainingConfig | None = None,
    quick: bool = False,
    overwrite: bool = False,
) -> Path:
    """Trains the dense and the MoE config and writes `report.md` (+ PNG plots
    and `summary.json`) into `output_dir`. Without configs, the bundled sample
    configs are trained on generated demo data. Returns the report path."""
    from chronos_moe.training.run import build_dataset, train

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dense_config = dense_config or sample_config(SAMPLE_CONFIGS[0])
    moe_config = moe_config or sample_config(SAMPLE_CONFIGS[1])
    if quick:
        dense_config = dense_config.replace(**QUICK_OVERRIDES)
        moe_config = moe_config.replace(**QUICK_OVERRIDES)
    test_paths = dense_config.validation_data_paths
    if not _files_exist(dense_config.training_data_paths):
        train_path, test_path = make_demo_data(output / "data", dense_config.prediction_length)
        shared = {"training_data_paths": [str(train_path)], "probability": [1.0]}
        dense_config = dense_config.replace(**shared)
        moe_config = moe_config.replace(**shared)
        test_paths = [str(test_path)]
    summaries = []
    for name, config in (("dense", dense_config), ("moe", moe_config)):
        config = config.replace(output_dir=str(output / name), seed=dense_config.seed)
        result = train(config, overwrite=overwrite)
        model = result.model
        validation = (
            build_dataset(config, mode="validation", paths=test_paths) if test_paths else None
        )
        validation_ce = float("nan")
        if validation is not None:
            scores = model.evaluate(validation, return_dict=True, verbose=0)
            validation_ce = float(scores.get("ce_loss", scores["loss"]))
        steps = [row["step"] for row in result.log]
        seconds = result.log[-1]["seconds"] / max(steps[-1], 1)
        utilization = None
        if config.use_moe and validation is not None:
            utilization = _utilization(model, validation, config.num_experts)
        summaries.append(
            RunSummary(
                name, result.log[-1]["ce_loss"], validation_ce, seconds, result.log, utilization
            )
        )
    return _write_report(output, summaries, dense_config, moe_config)


def _files_exist(paths) -> bool:
    return bool(paths) and all(Path(p).is_file() for p in paths)


def _utilization(model, dataset, num_experts: int) -> list[float]:
    from keras import ops

    counts = np.zeros(num_experts)
    for index in range(len(dataset)):
        batch = dataset[index]
        states = model.encode(batch["input_ids"], batch["attention_mask"])
        chosen = ops.convert_to_numpy(
            model.route(states, batch["attention_mask"])["expert_indices"]
        )
        counts += np.bincount(chosen.ravel(), minlength=num_experts)
    return (counts / max(counts.sum(), 1)).tolist()


def _write_report(output: Path, runs: list[RunSummary], dense, moe) -> Path:
    from chronos_moe.evaluation.plots import plot_training_curves

    plot_training_curves({run.name: run.log for run in runs}, output / "training_curves.png")
    dense_run, moe_run = runs
    lines = [
        "# Dense vs Mixture-of-Experts Chronos",
        "",
        f"Both runs: {dense.max_steps} steps, batch {dense.per_device_train_batch_size}, "
        f"context {dense.context_length}, prediction {dense.prediction_length}, seed {dense.seed}. "
        f"MoE: {moe.num_experts} experts, top-{moe.num_active_experts}, "
        f"balance weight {moe.load_balancing_weight}.",
        "",
        "| model | final train CE | validation CE | s / step | time vs dense |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        ratio = run.seconds_per_step / dense_run.seconds_per_step
        lines.append(
            f"| {run.name} | {run.final_ce:.4f} | {run.validation_ce:.4f} | "
            f"{run.seconds_per_step:.3f} | {ratio:.2f}x |"
        )
    lines += ["", "![training curves](training_curves.png)", ""]
    if moe_run.utilization is not None:
        shares = ", ".join(f"expert {i}: {u:.1%}" for i, u in enumerate(moe_run.utilization))
        lines += ["## Expert utilisation (validation series)", "", shares, ""]
    report = output / "report.md"
    report.write_text("\n".join(lines))
    summary = {run.name: dataclasses.asdict(run) for run in runs}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return report
