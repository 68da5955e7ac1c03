"""Every docstring example of the layers runs as written."""

import doctest
import importlib

import pytest

MODULES = [
    "common",
    "dense",
    "dropout",
    "layer_norm",
    "position_bias",
    "attention",
    "feed_forward",
    "block",
    "residual_block",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"chronos_moe.layers.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
