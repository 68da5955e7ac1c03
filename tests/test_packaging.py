"""The package builds, passes `twine check`, and works when installed from its wheel.

The wheel goes into a fresh virtual environment that sees this environment's
third-party packages (Keras, torch, JAX) but not the source tree: the quickstart
then runs from the installed files, offline, with a tiny local checkpoint in
place of the hub id.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import chronos_moe

ROOT = Path(__file__).resolve().parents[1]


def run(command, **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert completed.returncode == 0, f"{command}:\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel built from a copy of the tracked tree (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    files = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    output = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(output), str(source)])
    return output


def test_version_is_single_sourced():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("\n[project]\n")[1].split("\n[")[0]
    assert re.search(r'^dynamic = \["version"\]', project, flags=re.MULTILINE)
    assert not re.search(r"^version = ", project, flags=re.MULTILINE)
    assert 'version = { attr = "chronos_moe.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", chronos_moe.__version__)


def test_sdist_and_wheel_pass_twine_check(dist):
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"chronos_moe-{chronos_moe.__version__}-py3-none-any.whl"]
    assert len(sdists) == 1
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])


def test_wheel_installs_and_runs_the_quickstart(dist, tmp_path):
    from tests.test_docs import DOCS, HUB_ID, code_blocks

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    # This environment's third-party packages, but not its editable chronos_moe:
    # a plain path in a .pth file does not run the editable install's finder.
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "parent-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = dist.glob("*.whl")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    run([*pip, "--no-index", str(wheel)])

    from chronos_moe import ChronosPipeline, ChronosT5

    model = ChronosT5.from_preset("tiny", d_model=32, d_ff=64, d_kv=8, num_layers=1)
    checkpoint = ChronosPipeline(model).save_pretrained(tmp_path / "tiny")
    (code,) = code_blocks(DOCS / "quickstart.md", "python")
    code = HUB_ID.sub(repr(str(checkpoint)), code)
    code += "\nimport chronos_moe; print(chronos_moe.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    completed = run([str(python), "-c", code], cwd=tmp_path, env=env)
    lines = completed.stdout.splitlines()
    assert lines[0] == "(1, 20, 12)"
    assert Path(lines[-1]).is_relative_to(environment), "imported the source tree, not the wheel"

    help_text = run([str(environment / "bin" / "chronos-moe"), "--help"], env=env).stdout
    assert "compare" in help_text and "train" in help_text
    configs = run(
        [str(python), "-c", "import importlib.resources as r, chronos_moe.configs as c; "
         "print(sorted(p.name for p in r.files(c).iterdir() if p.suffix == '.yaml'))"],
        cwd=tmp_path, env=env,
    ).stdout  # fmt: skip
    assert "chronos-t5-tiny-moe-sample.yaml" in configs
    assert (Path(lines[-1]).parent / "py.typed").is_file()
