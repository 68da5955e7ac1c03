"""The test-only fault switch and the per-step log, in-process."""

import errno
import signal

import pytest

from chronos_moe.training import faults
from chronos_moe.training.run import StepsLog, read_steps


def test_faults_are_parsed_with_steps_and_ranges():
    assert faults.parse("kill:save.model:4, nan:step.start:3-5,eio:prune") == (
        faults.Fault("kill", "save.model", 4, 4),
        faults.Fault("nan", "step.start", 3, 5),
        faults.Fault("eio", "prune", None, None),
    )
    fault = faults.parse("nan:step.start:3-5")[0]
    assert [fault.fires("step.start", s) for s in (2, 3, 5, 6)] == [False, True, True, False]
    assert not fault.fires("step.end", 3)


@pytest.mark.parametrize(
    "spec", ["kill", "boom:save.model", "kill:save.nowhere", "kill:step.end:x", "kill:prune:3-"]
)
def test_a_malformed_fault_is_refused(spec):
    with pytest.raises(ValueError, match="CHRONOS_MOE_FAULT"):
        faults.parse(spec)


def test_faults_act_only_where_asked(monkeypatch, tmp_path):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.at("save.model", 4)  # unset: nothing
    record = tmp_path / "record.txt"
    monkeypatch.setenv(faults.RECORD_ENV, str(record))
    monkeypatch.setenv(faults.ENV, "enospc:save.model:4,eio:save.rename")
    faults.at("save.model", 3)
    with pytest.raises(OSError) as full:
        faults.at("save.model", 4)
    assert full.value.errno == errno.ENOSPC and "save.model" in str(full.value)
    with pytest.raises(OSError) as failing:
        faults.at("save.rename", 9)
    assert failing.value.errno == errno.EIO
    assert record.read_text().splitlines() == ["enospc save.model 4", "eio save.rename 9"]
    with pytest.raises(ValueError, match="Unknown fault point"):
        faults.at("save.elsewhere", 1)


def test_a_sigterm_fault_signals_the_process(monkeypatch):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *args: received.append(args[0]))
    try:
        monkeypatch.setenv(faults.ENV, "sigterm:step.end:2")
        faults.at("step.end", 2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]


def test_the_steps_log_drops_later_and_torn_lines_on_resume(tmp_path):
    path = tmp_path / "steps.jsonl"
    with StepsLog(path, 0) as log:
        for step in (1, 2, 3):
            log.append({"step": step, "ce_loss": float("nan"), "lr": 0.5})
    with open(path, "a") as handle:
        handle.write('{"step": 4, "ce_lo')  # the half-written line of a killed run
    assert [line["step"] for line in read_steps(path)] == [1, 2, 3]
    assert read_steps(path)[0] == {"step": 1, "ce_loss": None, "lr": 0.5}
    with StepsLog(path, 2) as log:
        log.append({"step": 3, "ce_loss": 1.0, "lr": 0.25})
    assert [line["step"] for line in read_steps(path)] == [1, 2, 3]
    assert read_steps(path)[2]["ce_loss"] == 1.0
    assert path.read_text().endswith("\n")
