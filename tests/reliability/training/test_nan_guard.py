"""A non-finite loss (issue 9, item 11).

The test hook `CHRONOS_MOE_FAULT=nan:step.start:<k>` puts NaN into a weight
before step k, so the step's loss and update are NaN. Under
`nan_policy: skip` the update is undone (weights and optimizer state are those
before the step) and the run stops after `max_consecutive_nan_skips` such steps
in a row; under `nan_policy: abort` (the default) the run stops naming the
step. No committed checkpoint holds a non-finite value.
"""

from chronos_moe.training.run import CHECKPOINTS, STEPS_LOG, read_steps
from tests.reliability.training.runs import (
    arrays,
    assert_every_checkpoint_verifies,
    assert_same_arrays,
    committed,
    output_of,
)

NAN_RUN = {"max_steps": 8, "save_steps": 1, "save_total_limit": None}


def test_skip_leaves_weights_and_optimizer_unchanged_and_stops_after_m_in_a_row(runs):
    config = runs.config("nan-skip", nan_policy="skip", max_consecutive_nan_skips=2, **NAN_RUN)
    output = output_of(config)
    done = runs.run(config, fault="nan:step.start:3,nan:step.start:6-7")
    assert done.returncode == 2
    assert "The loss became nan at step 3; its update was skipped (1 in a row" in done.stderr
    assert (
        "error: The loss was non-finite in 2 steps in a row (steps 6 to 7); stopping "
        "(nan_policy: skip, max_consecutive_nan_skips: 2). The newest checkpoint is step-6."
    ) in done.stderr
    steps = read_steps(output / STEPS_LOG)
    assert [line["skipped"] for line in steps] == [False, False, True, False, False, True, True]
    assert steps[2]["ce_loss"] is None and steps[3]["ce_loss"] is not None
    # The skipped step changed nothing: the checkpoints before and after it are equal,
    # and the next step changes the weights again.
    assert committed(output) == [1, 2, 3, 4, 5, 6]
    folder = output / CHECKPOINTS
    assert_same_arrays(folder / "step-3", folder / "step-2")
    changed = arrays(folder / "step-4")["model.safetensors"]
    unchanged = arrays(folder / "step-3")["model.safetensors"]
    assert any((changed[key] != unchanged[key]).any() for key in changed)
    assert_every_checkpoint_verifies(output)


def test_abort_names_the_step(runs):
    config = runs.config("nan-abort", **NAN_RUN)  # nan_policy: abort, the default
    output = output_of(config)
    done = runs.run(config, fault="nan:step.start:3")
    assert done.returncode == 2
    assert (
        "error: The loss became nan at step 3; stopping (nan_policy: abort). "
        "The newest checkpoint is step-2."
    ) in done.stderr
    assert "Traceback" not in done.stderr
    assert committed(output) == [1, 2]
    assert_every_checkpoint_verifies(output)
