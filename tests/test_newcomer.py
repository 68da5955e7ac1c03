"""chronos-moe as a newcomer meets it: ``KERAS_BACKEND`` unset and an empty
``HOME`` (no ``~/.keras/keras.json``), in fresh processes.

Every other test sets ``KERAS_BACKEND`` (tests/conftest.py), which once hid a
README command that crashed on a fresh machine (Keras fell back to
TensorFlow). Here the package must choose the backend itself: under the torch
suite both torch and JAX are importable and torch is chosen; under the JAX
suite torch is hidden (a ``sitecustomize`` puts ``None`` in
``sys.modules["torch"]``, as if it were not installed) and JAX is chosen. Each
command-line sub-command then does its smallest real run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest
import yaml

from tests.training.helpers import (
    PREDICTION_LENGTH,
    make_data,
    make_start_checkpoint,
    small_config,
)

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.config.backend()
# What a newcomer's machine has: under the JAX suite, a machine without torch.
HIDE_TORCH = BACKEND == "jax"

HIDE_TORCH_SITECUSTOMIZE = """\
import sys

sys.modules["torch"] = None  # `import torch` fails and find_spec("torch") is None
"""


@pytest.fixture(scope="module")
def newcomer_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a fresh shell: no KERAS_BACKEND, an empty HOME."""
    home = tmp_path_factory.mktemp("home")
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env.update(HOME=str(home), MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
    python_path = [str(ROOT)]
    if HIDE_TORCH:
        site = tmp_path_factory.mktemp("hide-torch")
        (site / "sitecustomize.py").write_text(HIDE_TORCH_SITECUSTOMIZE)
        python_path.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    return env


def run(env: dict[str, str], *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def chronos_moe_command() -> str:
    """The `chronos-moe` console script of this environment, as installed by pip."""
    script = Path(sys.executable).with_name("chronos-moe")
    return str(script) if script.exists() else shutil.which("chronos-moe") or "chronos-moe"


def test_hiding_torch_really_hides_it(newcomer_env):
    probe = "import importlib.util; print(importlib.util.find_spec('torch') is None)"
    out = run(newcomer_env, sys.executable, "-c", probe).stdout.strip()
    assert out == str(HIDE_TORCH)


def test_import_chooses_a_supported_backend(newcomer_env):
    script = textwrap.dedent(
        """
        import sys
        import chronos_moe
        assert "keras" not in sys.modules, "import chronos_moe imported Keras"
        chronos_moe.ChronosPipeline, chronos_moe.build_moe_chronos, chronos_moe.ContextRouter
        import keras
        print(keras.config.backend(), chronos_moe.backend_info()["backend"])
        """
    )
    out = run(newcomer_env, sys.executable, "-c", script).stdout.split()
    assert out == [BACKEND, BACKEND]


def test_a_submodule_imported_first_still_gets_the_chosen_backend(newcomer_env):
    """Import order cannot matter: a module that imports Keras at its top,
    imported before anything else of the package."""
    script = (
        "from chronos_moe.moe.router import ContextRouter; "
        "import keras; print(keras.config.backend())"
    )
    assert run(newcomer_env, sys.executable, "-c", script).stdout.strip() == BACKEND


def test_an_unsupported_backend_is_named(newcomer_env):
    env = {**newcomer_env, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, "-c", "import chronos_moe"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "KERAS_BACKEND must be one of ('torch', 'jax')" in result.stderr
    assert "Received: KERAS_BACKEND='tensorflow'" in result.stderr


def test_every_sub_command_runs_as_a_newcomer(newcomer_env, tmp_path):
    """generate-data, train, evaluate, forecast, analyze-experts, compare and tune, each
    on a tiny model, through the installed `chronos-moe` command."""
    command = chronos_moe_command()
    data = run(
        newcomer_env,
        command,
        "generate-data",
        "--output",
        str(tmp_path / "generated.arrow"),
        "--num-series",
        "6",
        "--length",
        "60",
    )
    assert (tmp_path / "generated.arrow").is_file(), data.stdout

    start = make_start_checkpoint(tmp_path / "start")
    train_data, test_data = make_data(tmp_path)
    configs = {}
    for name, use_moe in (("dense", False), ("moe", True)):
        config = small_config(start, train_data, tmp_path / name, use_moe=use_moe, max_steps=2)
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config.to_dict()))

    trained = run(newcomer_env, command, "train", "--config", str(configs["moe"]))
    final = tmp_path / "moe" / "final"
    assert final.is_dir(), trained.stdout

    run(
        newcomer_env,
        command,
        "evaluate",
        "--model",
        str(final),
        "--data",
        str(test_data),
        "--prediction-length",
        str(PREDICTION_LENGTH),
        "--num-samples",
        "4",
        "--output",
        str(tmp_path / "evaluation.csv"),
    )
    assert (tmp_path / "evaluation.csv").read_text().count("\n") >= 2

    sales = tmp_path / "sales.csv"
    sales.write_text(
        "item_id,timestamp,target\n"
        + "".join(
            f"{i},2024-01-01 {h:02d}:00,{(h * (i + 2)) % 7}\n" for h in range(20) for i in (1, 2)
        )
    )
    run(
        newcomer_env,
        command,
        "forecast",
        "--model",
        str(final),
        "--data",
        str(sales),
        "--prediction-length",
        str(PREDICTION_LENGTH),
        "--num-samples",
        "4",
        "--output",
        str(tmp_path / "forecasts.csv"),
    )
    forecasts = (tmp_path / "forecasts.csv").read_text().splitlines()
    assert forecasts[0].startswith("item_id,timestamp,target_name,predictions,0.1,")
    assert len(forecasts) == 1 + 2 * PREDICTION_LENGTH
    assert forecasts[1].startswith("1,2024-01-01 20:00:00,target,")

    run(
        newcomer_env,
        command,
        "analyze-experts",
        "--model",
        str(final),
        "--data",
        str(test_data),
        "--output-dir",
        str(tmp_path / "experts"),
    )
    assert any((tmp_path / "experts").glob("*.png"))

    run(
        newcomer_env,
        command,
        "compare",
        "--dense-config",
        str(configs["dense"]),
        "--moe-config",
        str(configs["moe"]),
        "--output-dir",
        str(tmp_path / "compare"),
        "--num-samples",
        "4",
        "--max-steps",
        "1",
    )
    report = (tmp_path / "compare" / "report.md").read_text()
    assert "Both runs: 1 steps" in report
    assert f"Keras backend {BACKEND} on" in report
    assert "## Expert utilisation" in report

    tune_config = tmp_path / "tune.yaml"
    tune_config.write_text(
        yaml.safe_dump(
            {
                **yaml.safe_load(configs["moe"].read_text()),
                "validation_data_paths": [str(test_data)],
            }
        )
    )
    tuned = run(
        newcomer_env,
        command,
        "tune",
        "--config",
        str(tune_config),
        "--trials",
        "1",
        "--num-samples",
        "4",
        "--output-dir",
        str(tmp_path / "tuning"),
    )
    assert "trial 0: complete WQL" in tuned.stdout
    for name in ("study.db", "best_config.yaml", "optimization_history.png"):
        assert (tmp_path / "tuning" / name).is_file(), name
