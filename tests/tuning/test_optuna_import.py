"""Optuna stays optional: `import chronos_moe` does not import it, and without it
the tuning names and `chronos-moe tune` say what to install."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.training.helpers import make_data

ROOT = Path(__file__).resolve().parents[2]
HIDE_OPTUNA = 'import sys\nsys.modules["optuna"] = None  # as if it were not installed\n'


def run_python(code: str, tmp_path: Path, hide_optuna: bool) -> subprocess.CompletedProcess:
    path = [str(ROOT)]
    if hide_optuna:
        (tmp_path / "sitecustomize.py").write_text(HIDE_OPTUNA)
        path.insert(0, str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_importing_the_package_does_not_import_optuna(tmp_path):
    code = (
        "import sys, chronos_moe, chronos_moe.tuning, chronos_moe.cli\n"
        "from chronos_moe.tuning import SearchSpace\n"
        "SearchSpace.default()\n"
        "print('optuna' in sys.modules)"
    )
    completed = run_python(code, tmp_path, hide_optuna=False)
    assert completed.stdout.strip() == "False", completed.stderr


def test_without_optuna_the_error_names_the_extra(tmp_path):
    code = (
        "from chronos_moe import tuning\n"
        "try:\n"
        "    tuning.tune\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    completed = run_python(code, tmp_path, hide_optuna=True)
    assert completed.stdout.startswith("MissingTuneExtra "), completed.stderr
    assert 'pip install "chronos-moe[tune]"' in completed.stdout


def test_without_optuna_the_command_fails_in_one_line(tmp_path):
    train, test = make_data(tmp_path)
    config = {
        "training_data_paths": [str(train)],
        "validation_data_paths": [str(test)],
        "use_moe": True,
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    code = (
        "import sys\nfrom chronos_moe.cli import main\n"
        f"sys.exit(main(['tune', '--config', {str(tmp_path / 'base.yaml')!r}, '--trials', '1', "
        f"'--output-dir', {str(tmp_path / 'study')!r}]))"
    )
    completed = run_python(code, tmp_path, hide_optuna=True)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip() == (
        "chronos-moe tune: error: Hyperparameter tuning needs Optuna, which is not installed: "
        'pip install "chronos-moe[tune]"'
    )
    assert not (tmp_path / "study").exists()
