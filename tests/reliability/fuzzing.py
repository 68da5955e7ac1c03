"""Fuzzing helpers: a reader process that survives crashes and hangs, and
hypothesis strategies that mutate valid files.

The readers run in a separate process (`fuzz_worker.py`): a segfault in native
code or a hang then fails the test with the input that caused it instead of
killing or freezing pytest. A reader gets `TIME_LIMIT` seconds per file; past
that the process is killed (a real timeout, not a speed assertion).
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
TIME_LIMIT = 5.0  # seconds a reader may take for one file (issue 9, item 7)
STARTUP_LIMIT = 300.0  # importing Keras and a backend in the worker
# Allocation allowed while reading a file: a few times its size, plus a constant
# for the reader's own bookkeeping (small for the KB-sized inputs fuzzed here).
ALLOCATION_FACTOR = 4
ALLOCATION_CONSTANT = 2**20


class ReaderProcess:
    """A `fuzz_worker` process for one target, restarted after a crash or a hang.

    Args:
        target: str. A key of `fuzz_worker.TARGETS`.
        file_name: str. The name every input is written under (the readers
            look for fixed names such as `config.json`).
    """

    def __init__(self, target: str, file_name: str) -> None:
        self.target = target
        self.directory = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
        self.path = self.directory / file_name
        self.process: subprocess.Popen | None = None
        self.counts: dict[str, int] = {}

    def _start(self) -> None:
        self.stderr = open(self.directory / "stderr.txt", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "tests.reliability.fuzz_worker"]
            + [self.target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        ready = self._answer(STARTUP_LIMIT)
        if ready is None or not ready.get("ready"):
            raise RuntimeError(f"the fuzz worker did not start: {self._stderr_tail()}")

    def _answer(self, timeout: float) -> dict | None:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"outcome": "crash"}

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        return (self.directory / "stderr.txt").read_text()[-1500:]

    def read(self, data: bytes) -> dict:
        """Writes `data` under the file name, has the worker read it, returns its report.

        `outcome` is `ok`, `library_error`, `other_error`, `crash` (the worker
        died: `returncode`, `stderr`) or `hang` (no answer within `TIME_LIMIT`).
        """
        self.path.write_bytes(data)
        if self.process is None:
            self._start()
        self.process.stdin.write(f"{self.path}\n")
        self.process.stdin.flush()
        report = self._answer(TIME_LIMIT)
        if report is None or report["outcome"] == "crash":
            if report is None:
                self.process.kill()
            returncode = self.process.wait()
            report = {
                "outcome": "hang" if report is None else "crash",
                "returncode": returncode,
                "stderr": self._stderr_tail(),
            }
            self.close()
        self.counts[report["outcome"]] = self.counts.get(report["outcome"], 0) + 1
        return report

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:  # idle between inputs: nothing to lose
                self.process.kill()
                self.process.wait()
            self.stderr.close()
            self.process = None


def check_read(reader: ReaderProcess, data: bytes) -> dict:
    """Reads `data`; asserts the promise of issue 9 item 7 for it.

    Only the library's own error type, no crash, no hang over `TIME_LIMIT`,
    and no allocation beyond `ALLOCATION_FACTOR` times the file size (plus
    `ALLOCATION_CONSTANT`)."""
    report = reader.read(data)
    shown = data if len(data) <= 200 else data[:200] + b"..."
    assert report["outcome"] in ("ok", "library_error"), (
        f"{reader.target} reader: {report} for a {len(data)}-byte input {shown!r}"
    )
    limit = ALLOCATION_FACTOR * len(data) + ALLOCATION_CONSTANT
    assert report["peak_bytes"] <= limit, (
        f"{reader.target} reader allocated {report['peak_bytes']} bytes (limit {limit}) "
        f"for a {len(data)}-byte input {shown!r}"
    )
    return report


# The CI run: a few seconds per target, the same inputs every time (derandomized,
# no shrinking: the input is reported as found). The long run, marked slow and
# on only when CHRONOS_FUZZ_EXAMPLES is set, draws that many fresh inputs per
# target and shrinks a failing one.
CI = settings(
    max_examples=60,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(
    CI,
    max_examples=int(os.environ.get("CHRONOS_FUZZ_EXAMPLES", "3000")),
    derandomize=False,
    phases=list(Phase),
)


def profiles(ci_examples: int = 60, ci_marks=()) -> list:
    """The `ci` and `long` settings, as parameters of a fuzz test."""
    long_marks = [
        pytest.mark.slow,
        pytest.mark.skipif(
            "CHRONOS_FUZZ_EXAMPLES" not in os.environ,
            reason="the long fuzz runs when CHRONOS_FUZZ_EXAMPLES is set (docs/reliability.md)",
        ),
    ]
    return [
        pytest.param(settings(CI, max_examples=ci_examples), id="ci", marks=ci_marks),
        pytest.param(LONG, id="long", marks=long_marks),
    ]


def fuzz(reader: ReaderProcess, inputs: st.SearchStrategy[bytes], profile: settings) -> None:
    """Runs `check_read` on the inputs hypothesis draws under `profile`."""

    @profile
    @given(inputs)
    def run(data: bytes) -> None:
        check_read(reader, data)

    run()


# ---- mutations ---------------------------------------------------------------------------

# Integers that break length and offset fields: zero, sign and width limits, huge.
INTERESTING_INTEGERS = (
    0,
    1,
    -1,
    255,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**40,
    2**63 - 1,
    100 * 2**20 + 1,
)


def _word(value: int, width: int) -> bytes:
    return (value % 2 ** (8 * width)).to_bytes(width, "little")


def _apply(seed: bytes, edits: list[tuple]) -> bytes:
    data = bytearray(seed)
    for kind, position, argument in edits:
        position = position % (len(data) + 1)
        if kind == "set" and position < len(data):
            data[position] = argument
        elif kind == "word":
            value, width = argument
            data[position : position + width] = _word(value, width)
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = argument
        elif kind == "delete":
            del data[position : position + argument]
    return bytes(data)


_EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(
        st.just("word"),
        st.integers(0, 2**20),
        st.tuples(st.sampled_from(INTERESTING_INTEGERS), st.sampled_from([4, 8])),
    ),
    st.tuples(st.just("truncate"), st.integers(0, 2**20), st.none()),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 64)),
)


def mutated_bytes(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid files with 1–4 byte-level edits (byte and word overwrites with
    boundary integers, truncation, insertion, deletion), or random bytes."""
    edited = st.builds(_apply, st.sampled_from(seeds), st.lists(_EDIT, min_size=1, max_size=4))
    return st.one_of(edited, edited, edited, st.binary(max_size=256))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(INTERESTING_INTEGERS)
    | st.integers()
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _replace_at(document, path: list, value, delete: bool):
    """A copy of `document` with the entry at `path` (keys/indices, taken modulo
    the container size) replaced by `value` or deleted."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    copy = dict(document) if isinstance(document, dict) else list(document)
    if len(path) == 1 and delete:
        del copy[key]
    else:
        copy[key] = _replace_at(copy[key], path[1:], value, delete)
    return copy


def mutated_json(seed) -> st.SearchStrategy:
    """`seed` (a JSON document) with 1–3 entries, at any depth, replaced by
    arbitrary JSON or deleted."""
    edit = st.tuples(
        st.lists(st.integers(0, 63), min_size=1, max_size=4), JSON_VALUES, st.booleans()
    )

    def apply(edits):
        document = seed
        for path, value, delete in edits:
            document = _replace_at(document, path, value, delete)
        return document

    return st.builds(apply, st.lists(edit, min_size=1, max_size=3))


def safetensors_bytes(header: dict, data: bytes, declared_length: int | None = None) -> bytes:
    """A safetensors file from a header dict and a data buffer; `declared_length`
    overrides the 8-byte header length."""
    text = json.dumps(header).encode()
    length = len(text) if declared_length is None else declared_length
    return struct.pack("<Q", length % 2**64) + text + data
