"""Test-only fault injection into a training run: the one place that reads
`CHRONOS_MOE_FAULT`.

The reliability tests (docs/reliability.md) run real `chronos-moe train`
processes and make them fail at named points of the training loop and of a
checkpoint save. The variable holds comma-separated faults
`<action>:<point>[:<steps>]`:

* `action`: `kill` (SIGKILL the process, as `kill -9` would), `sigterm` (send
  the process a SIGTERM), `enospc` or `eio` (raise that `OSError`, as a full or
  failing disk would), `nan` (make the step's loss non-finite: at `step.start`
  only);
* `point`: one of `POINTS`;
* `steps`: the training step (`7`) or range of steps (`3-5`) at which the fault
  fires; every step when left out. At `prune` the step is the one of the
  checkpoint being removed.

For example `CHRONOS_MOE_FAULT=kill:save.optimizer:4` kills the run after it
wrote the optimizer state of checkpoint `step-4` and before it wrote the rest.
When `CHRONOS_MOE_FAULT_RECORD` names a file, each fault appends
`<action> <point> <step>` to it before it acts (the tests check that every
point was exercised). Unset, every call is a dictionary lookup and returns.

Example:

>>> import os
>>> os.environ[ENV] = "nan:step.start:3"
>>> [poisoned(step) for step in (2, 3)]
[False, True]
>>> del os.environ[ENV]
"""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
from typing import NamedTuple

ENV = "CHRONOS_MOE_FAULT"
RECORD_ENV = "CHRONOS_MOE_FAULT_RECORD"

# Every place a fault can be injected, in the order a run passes them.
POINTS = (
    "step.start",  # before the train step (`nan` poisons this step's loss)
    "step.end",  # after the train step, before its log line and checkpoint
    "save.mkdir",  # the temporary step-N.tmp-<id>/ directory was created
    "save.model",  # model.safetensors was written
    "save.optimizer",  # optimizer.safetensors was written
    "save.state",  # trainer_state.json was written
    "save.manifest",  # manifest.json was written and every file fsynced
    "save.rename",  # just before the rename to step-N/ (an error here fails the rename)
    "save.committed",  # step-N/ exists, pruning has not started
    "prune",  # an old checkpoint was moved aside, before it is deleted
)
ACTIONS = ("kill", "sigterm", "enospc", "eio", "nan")
_ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO}


class Fault(NamedTuple):
    action: str
    point: str
    first: int | None
    last: int | None

    def fires(self, point: str, step: int | None) -> bool:
        if point != self.point:
            return False
        if self.first is None:
            return True
        return step is not None and self.first <= step <= self.last


@functools.lru_cache(maxsize=4)
def parse(spec: str) -> tuple[Fault, ...]:
    """The faults of a `CHRONOS_MOE_FAULT` value; a malformed one is a `ValueError`."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ACTIONS or parts[1] not in POINTS:
            raise ValueError(
                f"{ENV}: expected '<action>:<point>[:<step>|<first>-<last>]' with an action in "
                f"{ACTIONS} and a point in {POINTS}. Received: {item!r}"
            )
        first = last = None
        if len(parts) == 3:
            steps = re.fullmatch(r"(\d+)(?:-(\d+))?", parts[2])
            if steps is None:
                raise ValueError(
                    f"{ENV}: a step is an integer or a range 'a-b'. Received: {item!r}"
                )
            first = last = int(steps.group(1))
            if steps.group(2):
                last = int(steps.group(2))
        faults.append(Fault(parts[0], parts[1], first, last))
    return tuple(faults)


def _firing(point: str, step: int | None) -> list[Fault]:
    spec = os.environ.get(ENV)
    if not spec:
        return []
    if point not in POINTS:
        raise ValueError(f"Unknown fault point {point!r}; the points are {POINTS}.")
    return [fault for fault in parse(spec) if fault.fires(point, step)]


def _record(fault: Fault, step: int | None) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a") as record:
            record.write(f"{fault.action} {fault.point} {step}\n")


def at(point: str, step: int | None = None) -> None:
    """Does what `CHRONOS_MOE_FAULT` asks at `point` of `step`: kill the process,
    signal it, or raise an `OSError`. Nothing when the variable is unset."""
    for fault in _firing(point, step):
        if fault.action == "nan":
            continue  # read by `poisoned`
        _record(fault, step)
        if fault.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            code = _ERRNO[fault.action]
            raise OSError(code, f"{os.strerror(code)} (injected by {ENV} at {point})")


def poisoned(step: int) -> bool:
    """Whether `CHRONOS_MOE_FAULT` asks for a non-finite loss at `step`."""
    faults = [f for f in _firing("step.start", step) if f.action == "nan"]
    for fault in faults:
        _record(fault, step)
    return bool(faults)
