"""The examples in the data modules' docstrings run as written."""

import doctest
import importlib

import pytest

MODULES = [
    "errors",
    "source",
    "arrow",
    "arrow_writer",
    "report",
    "windows",
    "validation_windows",
    "dataset",
    "synthetic",
    "mixup",
    "long_frame",
    "table_file",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in ("source", "long_frame", "table_file"):
        pytest.importorskip("pandas")  # the DataFrame example builds one
    module = importlib.import_module(f"chronos_moe.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
