"""kill -9 at every save phase and at random moments, then `--resume` (issue 9,
items 1, 2 and 3).

Each test kills a real `chronos-moe train` process (SIGKILL, from the test or
from the process itself at a named point of `chronos_moe.training.faults`) and
resumes it in a new process until the run ends; the resumed run must equal the
uninterrupted reference run exactly: every step's losses, learning rate and
window identities (`steps.jsonl`), the final weights and optimizer state.

The long soak (20 trials) is (docs/reliability.md)

    CHRONOS_SOAK_TRIALS=20 KERAS_BACKEND=torch \
        python -m pytest -m slow tests/reliability/training -k soak_long -s
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import time

import pytest

from chronos_moe.training import checkpoint, faults
from chronos_moe.training.run import CHECKPOINTS, STEPS_LOG, read_steps
from tests.reliability.training.runs import (
    MAX_STEPS,
    ROOT,
    TIMEOUT,
    assert_every_checkpoint_verifies,
    assert_same_run,
    committed,
    output_of,
    torn,
    wait_for,
)

# The crash at every save phase: (point, step, newest complete checkpoint after the
# kill, whether a torn directory is left). Each link resumes the previous one's output,
# so a chain also interrupts a resumed run again, several times over. The two chains
# run side by side (two processes at a time), then each is resumed to its end.
CHAINS = {
    "chain-a": (
        ("save.mkdir", 4, 2, True),
        ("save.model", 4, 2, True),
        ("save.optimizer", 4, 2, True),
        ("save.state", 4, 2, True),
        ("save.manifest", 4, 2, True),
    ),
    "chain-b": (
        ("save.rename", 4, 2, True),
        ("save.committed", 4, 4, False),
        ("step.start", 5, 4, False),
        ("step.end", 7, 6, False),
        ("prune", 2, 8, True),  # saving step-8 removes step-2 (save_total_limit: 3)
    ),
}


@pytest.fixture(scope="module")
def chains(runs, reference):
    """Runs the chains; returns, per chain, its output directory, what each kill left
    and what each following process said, and the final resume."""
    configs = {name: runs.config(name) for name in CHAINS}
    results = {name: [] for name in CHAINS}
    finals = {}
    for index in range(max(len(links) for links in CHAINS.values()) + 1):
        started = {}
        for name, links in CHAINS.items():
            fault = f"kill:{links[index][0]}:{links[index][1]}" if index < len(links) else None
            if index <= len(links):
                started[name] = runs.start_process(configs[name], index > 0, fault, name)
        for name, process in started.items():
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            output = output_of(configs[name])
            if index == len(CHAINS[name]):
                finals[name] = {
                    "returncode": process.returncode,
                    "stdout": stdout,
                    "stderr": stderr,
                }
                continue
            results[name].append(
                {
                    "returncode": process.returncode,
                    "stdout": stdout,
                    "stderr": stderr,
                    "recorded": runs.recorded(name)[-1:],
                    "committed": committed(output),
                    "newest": checkpoint.latest_checkpoint(output / CHECKPOINTS),
                    "torn": torn(output),
                }
            )
            assert_every_checkpoint_verifies(output)
    return {name: (output_of(configs[name]), results[name], finals[name]) for name in CHAINS}


@pytest.mark.parametrize("name", list(CHAINS))
def test_crash_at_every_save_phase_resumes_from_the_newest_complete_checkpoint(
    chains, reference, name
):
    output, results, final = chains[name]
    for (point, step, newest, leaves_torn), result, after in zip(
        CHAINS[name], results, [*results[1:], final], strict=True
    ):
        where = f"killed at {point} of step {step}"
        assert result["returncode"] == -signal.SIGKILL, (where, result["stderr"])
        assert result["recorded"] == [("kill", point, str(step))], where
        # Never the torn one: the newest checkpoint whose manifest verifies.
        assert result["newest"] == output / CHECKPOINTS / f"step-{newest}", where
        assert max(result["committed"]) == newest, where
        assert bool(result["torn"]) == leaves_torn, (where, result["torn"])
        # The next process removes the torn directory at start, names it, and
        # resumes from the newest complete checkpoint.
        for path in result["torn"]:
            assert f"Removing {path}" in after["stderr"], where
            assert not path.exists(), where
        assert f"resuming at step {newest}" in after["stdout"], where
    assert final["returncode"] == 0, final["stderr"]
    assert not torn(output)
    assert_same_run(output, reference[0])


def test_every_fault_point_is_exercised(chains, runs):
    """The registry is what the code calls, and the chain kills at each point."""
    called = set()
    for path in (ROOT / "chronos_moe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "at"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "faults"
            ):
                called.add(node.args[0].value)
    assert called == set(faults.POINTS)
    assert {link[0] for links in CHAINS.values() for link in links} == set(faults.POINTS)
    killed = {point for action, point, _ in runs.recorded() if action == "kill"}
    assert killed >= set(faults.POINTS), sorted(set(faults.POINTS) - killed)


def test_double_resume_mid_epoch(chains, reference):
    """The end of the chain: interrupted after step 7 (between checkpoints, inside a
    pass over the data), resumed from step 6, interrupted again a step later (while
    pruning, after step-8 was committed), resumed from step 8: the same batches and
    losses as the uninterrupted run."""
    output, results, final = chains["chain-b"]
    assert results[3]["recorded"] == [("kill", "step.end", "7")]
    assert "resuming at step 6" in results[4]["stdout"]
    assert results[4]["recorded"] == [("kill", "prune", "2")]
    assert "resuming at step 8" in final["stdout"]
    # Step 7 is inside a pass: the windows of steps 6 to 8 come from one pass over
    # some series and a later pass over others (12 series, 4 windows a step).
    steps = read_steps(output / STEPS_LOG)
    cycles = {window[3] for line in steps[5:8] for window in line["windows"]}
    assert len(cycles) > 1
    assert_same_run(output, reference[0])


def soak(runs, reference, trials: int, seed: int) -> list[dict]:
    """`trials` runs, each killed once, then resumed to the end. Two trials in three
    are SIGKILLed by the test at a random moment: after the run logged a random step
    (2 to 14: its first checkpoint exists) and a random part of a step's time more,
    so the kill lands anywhere in a step, its log writes or its save. The third kills
    itself at a random named point and step."""
    output_reference, window = reference
    step_time = window / (MAX_STEPS - 2)  # the reference's seconds per step, saves included
    rng = random.Random(seed)
    summary = []
    for trial in range(trials):
        config = runs.config(f"soak-{seed}-{trial}")
        output = output_of(config)
        if trial % 3 == 2:  # a named point at a random step
            point = rng.choice(faults.POINTS)
            if point == "prune":  # saving step s removes step s - 6
                step = rng.randrange(1, 6) * 2
            elif point.startswith("save."):
                step = rng.randrange(2, MAX_STEPS // 2 + 1) * 2
            else:
                step = rng.randrange(3, MAX_STEPS + 1)
            done = runs.run(config, fault=f"kill:{point}:{step}")
            how = f"kill:{point}:{step}"
        else:  # the test kills it
            logged, delay = rng.randrange(2, MAX_STEPS - 1), rng.uniform(0, step_time)
            process = runs.start_process(config)
            wait_for(output / CHECKPOINTS / "step-2", process)
            while len(read_steps(output / STEPS_LOG)) < logged and process.poll() is None:
                time.sleep(0.001)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            done = process
            how = f"SIGKILL {delay:.3f} s after step {logged} was logged"
        newest = checkpoint.latest_checkpoint(output / CHECKPOINTS)
        record = {
            "trial": trial,
            "how": how,
            "returncode": done.returncode,
            "steps_logged": len(read_steps(output / STEPS_LOG)),
            "resumed_from": newest.name if newest else None,
            "torn": [path.name for path in torn(output)],
        }
        summary.append(record)
        assert newest is not None, record  # every trial found a loadable checkpoint
        assert_every_checkpoint_verifies(output)
        resumed = runs.run(config, resume=True)
        assert resumed.returncode == 0, (record, resumed.stderr)
        assert_same_run(output, output_reference)
        print(json.dumps(record))
    return summary


def test_kill_soak_short(runs, reference):
    # Two trials killed by the test at a random moment (the named points are the chain's).
    summary = soak(runs, reference, trials=2, seed=0)
    assert [r["returncode"] for r in summary] == [-signal.SIGKILL] * 2


@pytest.mark.slow
@pytest.mark.skipif(
    "CHRONOS_SOAK_TRIALS" not in os.environ,
    reason="the long soak runs when CHRONOS_SOAK_TRIALS is set (docs/reliability.md)",
)
def test_kill_soak_long(runs, reference, tmp_path):
    trials = int(os.environ["CHRONOS_SOAK_TRIALS"])
    summary = soak(runs, reference, trials=trials, seed=int(os.environ.get("CHRONOS_SOAK_SEED", 1)))
    killed = sum(r["returncode"] == -signal.SIGKILL for r in summary)
    torn_left = sum(bool(r["torn"]) for r in summary)
    print(
        f"soak: {trials} trials, {killed} killed ({torn_left} inside a save), "
        "all resumed to the reference run"
    )
    assert killed == trials


def test_token_level_run_resumes_exactly_after_kill_9(runs):
    """Token-level experts (their routers, expert-load statistics and selection
    biases) resume as exactly as the series level: killed after step 9, resumed
    from step 8, the run equals its uninterrupted twin step for step and bit for bit."""
    token = {"moe_level": "token", "num_experts": 4, "num_active_experts": 2}
    reference = runs.config("token-reference", **token)
    assert runs.run(reference).returncode == 0
    config = runs.config("token-killed", **token)
    killed = runs.run(config, fault="kill:step.end:9")
    assert killed.returncode == -signal.SIGKILL
    resumed = runs.run(config, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 8" in resumed.stdout
    assert_same_run(output_of(config), output_of(reference))
