"""One rank of `chronos-moe train` under torchrun, recording what it writes.

    torchrun --standalone --nproc_per_node=2 -m tests.distribution.ddp_worker AUDIT_DIR \
        train --config run.yaml

Runs the command line (`chronos_moe.cli.main`) with an audit hook that
records every file this process opens for writing, creates, renames or
deletes under the working tree (`sys.addaudithook`: Python's own `open`,
`os.rename`/`os.replace`, `os.mkdir`, `os.remove`, `shutil.rmtree`; the
safetensors writer goes through Python's `open` too), then writes the list to
`AUDIT_DIR/rank-<RANK>.json`. `test_torch_ddp.py` checks that only rank 0
wrote. `CHRONOS_MOE_FAULT_RANK` limits `CHRONOS_MOE_FAULT` to that rank.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"}


def main() -> int:
    audit_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    # torchrun's RANK, or a multi-host JAX run's process id.
    rank = os.environ.get("RANK") or os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    if os.environ.get("CHRONOS_MOE_FAULT_RANK", rank) != rank:
        os.environ.pop("CHRONOS_MOE_FAULT", None)
    watched = os.environ["DDP_WORKER_WATCH"]  # the run's output directory
    written: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode = args[0], args[1]
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if not writing and isinstance(args[2], int):
                writing = bool(args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and str(path).startswith(watched):
                written.append(f"open {path}")
        elif event in WRITE_EVENTS and args and str(args[0]).startswith(watched):
            written.append(f"{event} {args[0]}")

    sys.addaudithook(hook)
    from chronos_moe.cli import main as chronos_moe

    try:
        return chronos_moe(argv)
    finally:
        audit_dir.mkdir(parents=True, exist_ok=True)
        (audit_dir / f"rank-{rank}.json").write_text(json.dumps(written))


if __name__ == "__main__":
    sys.exit(main())
