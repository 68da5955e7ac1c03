"""Fixtures of the fault-injection tests: one `Runs` and one uninterrupted
reference run per session."""

import time

import pytest

from tests.reliability.training.runs import Runs, output_of, wait_for


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("fault-runs"))


@pytest.fixture(scope="session")
def reference(runs):
    """The uninterrupted run: `(output directory, seconds from its first checkpoint
    to its end)`, the window in which the soak's random kills fall."""
    config = runs.config("reference")
    process = runs.start_process(config)
    wait_for(output_of(config) / "checkpoints" / "step-2", process)
    first = time.monotonic()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return output_of(config), time.monotonic() - first
