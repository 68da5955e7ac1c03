"""Every script in examples/ runs with `--quick` under the current Keras backend.

Each example runs in its own process (as a user runs it), offline, writing into a
temporary directory; the checks read what it printed and wrote.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BACKEND = os.environ.get("KERAS_BACKEND", "torch")


def run_example(name: str, output_dir: Path, *extra: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, str(EXAMPLES / name), "--quick", "--output-dir", str(output_dir)]
    completed = subprocess.run(
        [*command, *extra], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, f"{name} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def check_forecast(output: str, directory: Path) -> None:
    assert "sample paths: (3, 5, 12)" in output
    assert "quantiles: (3, 12, 3) mean: (3, 12)" in output
    assert (directory / "forecast.png").stat().st_size > 0


def check_train_dense(output: str, directory: Path) -> None:
    assert "step   10  ce_loss" in output
    assert (directory / "run" / "final" / "model.safetensors").is_file()
    assert (directory / "run" / "log.csv").is_file()


def check_train_moe_fit(output: str, directory: Path) -> None:
    assert "forecast: (4, 10, 8)" in output
    assert "same routes after reloading: True" in output
    for name in ("ce_loss", "lb_loss", "expert_3", "val_ce_loss"):
        assert f"'{name}'" in output


def check_finetune_moe(output: str, directory: Path) -> None:
    assert "MoE forecasts equal the pretrained model's before training: True" in output
    assert "loaded: ChronosMoE" in output


def check_compare(output: str, directory: Path) -> None:
    report = (directory / "report.md").read_text()
    assert "| dense |" in report and "| moe |" in report
    assert (directory / "training_curves.png").is_file()


def check_evaluate(output: str, directory: Path) -> None:
    scores = (directory / "scores.csv").read_text()
    assert "my_data" in scores
    assert "relative WQL" in output


def check_analyze_experts(output: str, directory: Path) -> None:
    assert "4 experts, top-2" in output
    shares = output.split("slot share per expert:")[1].splitlines()[0]
    assert np.isclose(sum(float(x) for x in shares.strip(" []").split()), 1.0, atol=0.01)
    assert (directory / "report.md").is_file() and (directory / "routing.csv").is_file()


def check_switch_backends(output: str, directory: Path) -> None:
    assert f"'backend': '{BACKEND}'" in output
    difference = float(output.split("largest difference between the backends:")[1].split()[0])
    assert difference < 1e-3


def check_tune_experts(output: str, directory: Path) -> None:
    assert "search space: ['load_balancing_weight', 'num_active_experts', 'num_experts']" in output
    assert "trial 1: complete WQL" in output
    study = directory / "study"
    for name in ("study.db", "best_config.yaml", "optimization_history.png"):
        assert (study / name).stat().st_size > 0, name


CHECKS = {
    "forecast.py": check_forecast,
    "train_dense.py": check_train_dense,
    "train_moe_fit.py": check_train_moe_fit,
    "finetune_moe.py": check_finetune_moe,
    "compare.py": check_compare,
    "evaluate.py": check_evaluate,
    "analyze_experts.py": check_analyze_experts,
    "switch_backends.py": check_switch_backends,
    "tune_experts.py": check_tune_experts,
}


def test_every_example_is_checked():
    assert sorted(CHECKS) == sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs(name, tmp_path):
    if name == "switch_backends.py" and BACKEND != "torch":
        pytest.skip("runs both backends itself: once per test session (under torch) is enough")
    output = run_example(name, tmp_path)
    CHECKS[name](output, tmp_path)
