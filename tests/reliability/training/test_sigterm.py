"""SIGTERM stops a run cleanly (issue 9, item 14).

On SIGTERM `chronos-moe train` finishes the step it is in, commits a checkpoint
of it (unless that step was just saved), says so, and exits with status 0; a
second SIGTERM during that save changes nothing. `--resume` then continues as
if nothing happened.
"""

import signal

from chronos_moe.training.run import CHECKPOINTS, STEPS_LOG, read_steps
from tests.reliability.training.runs import (
    assert_every_checkpoint_verifies,
    assert_same_run,
    committed,
    output_of,
    torn,
    wait_for,
)


def test_sigterm_commits_the_last_finished_step_and_exits_cleanly(runs, reference):
    config = runs.config("sigterm")
    output = output_of(config)
    # 1. From outside, at some moment after the first checkpoint.
    process = runs.start_process(config)
    wait_for(output / CHECKPOINTS / "step-2", process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    stopped = len(read_steps(output / STEPS_LOG))  # the last finished step
    assert 2 <= stopped <= 16
    if stopped < 16:  # (a run that had finished says nothing)
        assert f"Stopped by SIGTERM after step {stopped}; checkpoint" in stderr
        assert "Continue with --resume" in stderr
        assert committed(output)[-1] == stopped
        assert not (output / "final").exists()
    assert not torn(output)
    assert_every_checkpoint_verifies(output)

    # 2. Resumed, and stopped by a SIGTERM after step 11 (not a save step) and
    # another one while that step's checkpoint is being written.
    fault = "sigterm:step.end:11,sigterm:save.model:11"
    second = runs.run(config, resume=True, fault=fault)
    assert second.returncode == 0, second.stderr
    assert runs.recorded("faults")[-2:] == [
        ("sigterm", "step.end", "11"),
        ("sigterm", "save.model", "11"),
    ]
    assert "Stopped by SIGTERM after step 11" in second.stderr
    assert committed(output)[-1] == 11 and not torn(output)
    assert_every_checkpoint_verifies(output)

    # 3. Resumed to the end: the uninterrupted run.
    third = runs.run(config, resume=True)
    assert third.returncode == 0 and "resuming at step 11" in third.stdout, third.stderr
    assert_same_run(output, reference[0])
