"""A reader process for the fuzz tests: reads the files it is sent and reports how.

Run as `python -m tests.reliability.fuzz_worker TARGET` (TARGET is a key of
`TARGETS`). It reads one file path per line on stdin and answers one JSON line
per file on stdout: `outcome` (`"ok"`, `"library_error"` for the target's own
error type, `"other_error"` for anything else), the error's `type` and
`message`, and `peak_bytes`, the peak of Python and numpy allocations while
reading (`tracemalloc`). A reader that crashes the interpreter (a segfault in
native code) or hangs shows up to the parent as a dead or silent process, so
the parent survives what the reader does not.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
import tracemalloc
from pathlib import Path


def read_checkpoint_config(path: Path) -> None:
    """`read_config` of the checkpoint directory holding `path` (a config.json)."""
    from chronos_moe.checkpoints import read_config

    read_config(path.parent)


def read_checkpoint_weights(path: Path) -> None:
    """`read_weights` of the directory holding `path` (model.safetensors or its index)."""
    from chronos_moe.checkpoints import read_weights

    read_weights(path.parent)


def read_arrow_series(path: Path) -> None:
    """Opens an Arrow file and reads every series."""
    from chronos_moe.data.arrow import ArrowSeriesFile

    with ArrowSeriesFile(path) as file:
        for _ in file:
            pass


def warm_up_arrow(directory: Path) -> None:
    """Reads one valid file first, untraced: pyarrow imports pandas on the first
    `to_numpy` of a chunk, a one-time cost that is not the reading of any input."""
    import pyarrow as pa

    table = pa.table({"start": pa.array(["2000-01-01"]), "target": pa.array([[1.0, None]])})
    path = directory / "warm_up.arrow"
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    read_arrow_series(path)


def library_error(target: str) -> type[Exception]:
    if target == "arrow":
        from chronos_moe.data.errors import DataError

        return DataError
    from chronos_moe.checkpoints import CheckpointError

    return CheckpointError


TARGETS = {
    "checkpoint_config": read_checkpoint_config,
    "checkpoint_weights": read_checkpoint_weights,
    "arrow": read_arrow_series,
}
WARM_UPS = {"arrow": warm_up_arrow}


def main(target: str) -> None:
    reader, allowed = TARGETS[target], library_error(target)
    if target in WARM_UPS:
        with tempfile.TemporaryDirectory() as directory:
            WARM_UPS[target](Path(directory))
    tracemalloc.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        report = {"outcome": "ok", "type": None, "message": None}
        try:
            reader(Path(line.rstrip("\n")))
        except allowed as error:
            report.update(outcome="library_error", type=type(error).__name__, message=str(error))
        except Exception as error:  # noqa: BLE001 - what the fuzz test looks for
            where = traceback.extract_tb(error.__traceback__)[-1]
            report.update(
                outcome="other_error",
                type=type(error).__name__,
                message=f"{error} (at {where.filename}:{where.lineno})"[:2000],
            )
        report["peak_bytes"] = tracemalloc.get_traced_memory()[1] - before
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
