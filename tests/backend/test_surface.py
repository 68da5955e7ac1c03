"""The backend package's shape: torch.py and jax.py implement the same
kernels, the package hands on exactly those, the choice imports no Keras, and
no module outside the package branches on the backend."""

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from chronos_moe import backend

PACKAGE = Path(__file__).resolve().parents[2] / "chronos_moe"
ACTIVE = importlib.import_module(f"chronos_moe.backend.{keras.config.backend()}")
# The active backend's modules with docstring examples besides its kernels'.
ACTIVE_EXAMPLES = [
    importlib.import_module(f"chronos_moe.backend.{name}")
    for name in {"jax": ["jax_xla"]}.get(keras.config.backend(), [])
]


def test_both_backends_implement_every_kernel():
    for name in ("torch", "jax"):
        module = importlib.import_module(f"chronos_moe.backend.{name}")
        missing = [k for k in (*backend.KERNELS, "device_and_version") if not hasattr(module, k)]
        assert not missing, (name, missing)
        assert isinstance(module.JIT_COMPILE, bool)


def test_the_package_hands_on_the_active_backends_kernels():
    for name in backend.KERNELS:
        assert getattr(backend, name) is getattr(ACTIVE, name), name
    assert backend.JIT_COMPILE is ACTIVE.JIT_COMPILE


def test_backend_info():
    info = backend.backend_info()
    assert info["backend"] == backend.BACKEND == keras.config.backend()
    assert set(info) == {"backend", "device", "backend_version", "keras_version"}


def test_the_choice_imports_no_keras():
    code = (
        "import sys; import chronos_moe.backend_choice as c; c.select_backend(); "
        "assert 'keras' not in sys.modules, 'keras imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


# A comparison of the active backend with a backend's name: code for one backend.
BRANCH = re.compile(
    r"(BACKEND|backend\(\))\s*[!=]=\s*[\"'](torch|jax)|[\"'](torch|jax)[\"']\s*[!=]=\s*\w*\.?BACKEND"
)


def test_no_backend_branch_outside_the_backend_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "backend" in path.parents or path.name == "backend_choice.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module", [backend, ACTIVE, *ACTIVE_EXAMPLES], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
