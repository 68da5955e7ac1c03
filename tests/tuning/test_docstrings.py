"""The examples in the tuning modules' docstrings run as written."""

import doctest
import importlib

import pytest

MODULES = ["search_space", "objective", "optuna_import"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"chronos_moe.tuning.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
