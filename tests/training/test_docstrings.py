"""The examples in the training modules' docstrings run as written."""

import doctest
import importlib

import pytest

MODULES = ["config", "schedules", "checkpoint", "compare", "run", "faults", "guarantees", "logs"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"chronos_moe.training.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
