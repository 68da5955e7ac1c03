"""The guarantees on the `model.fit` path: a user's own `fit` script (no command
line), killed with SIGKILL between checkpoints and inside a save, stopped by
SIGTERM, and started again each time, ends exactly where an uninterrupted run
ends: every step's losses, learning rate and windows, the weights, the
optimizer state and the data position (bitwise, on either backend).

(The command line's runner is composed of the same callbacks, so every other
test in this folder exercises them on the `fit` path as well.)
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from chronos_moe.training.logs import STEPS_LOG, read_steps
from tests.reliability.training.runs import (
    ROOT,
    TIMEOUT,
    assert_every_checkpoint_verifies,
    assert_same_run,
    committed,
    torn,
)


def fit(runs, output, fault=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.reliability.training.fit_worker"]
    return subprocess.run(
        command + [str(runs.start), str(runs.data), str(output)],
        env=runs.environment(fault, record="fit-faults"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def fit_reference(runs):
    output = runs.folder / "fit-reference"
    done = fit(runs, output)
    assert done.returncode == 0, done.stderr
    return output


def test_fit_resumes_exactly_after_kill_9_and_sigterm(runs, fit_reference):
    output = runs.folder / "fit-interrupted"
    # Killed as step 7 ends, before its line (between checkpoints, inside a pass).
    first = fit(runs, output, fault="kill:step.end:7")
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert committed(output) == [2, 4, 6] and len(read_steps(output / STEPS_LOG)) == 6
    # Started again: resumes at step 6, killed inside the save of step 10.
    second = fit(runs, output, fault="kill:save.optimizer:10")
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert committed(output) == [4, 6, 8] and torn(output)
    assert_every_checkpoint_verifies(output)
    # Started again: resumes at step 8 (the torn save removed), stopped by SIGTERM
    # after step 11, whose checkpoint it commits.
    third = fit(runs, output, fault="sigterm:step.end:11")
    assert third.returncode == 0, third.stderr
    assert "Stopped by SIGTERM after step 11" in third.stderr
    assert committed(output)[-1] == 11 and not torn(output)
    # Started again: runs to the end.
    last = fit(runs, output)
    assert last.returncode == 0, last.stderr
    recorded = [tuple(line) for line in runs.recorded("fit-faults")]
    assert [point for _, point, _ in recorded] == ["step.end", "save.optimizer", "step.end"]
    assert_same_run(output, fit_reference)
    assert_every_checkpoint_verifies(output)


def test_fit_refuses_a_finished_run(runs, fit_reference):
    again = fit(runs, fit_reference)
    assert again.returncode != 0
    assert "has finished its 16 steps" in again.stderr
