"""`OutputLock`: one training process per output directory.

This module imports neither Keras nor a backend, so `chronos-moe train` takes
the lock right after validating its config, seconds before Keras is imported:
a second run on the same directory exits at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from chronos_moe.training.errors import RunError

LOCK_FILE = ".lock"


# Locks this process holds: resolved directory -> [open lock file, entries].
_HELD: dict[Path, list] = {}


def _holder(handle: IO[str]) -> str:
    """The pid in a held lock file. The holder may be between taking the lock and
    writing its pid (the file is empty, or still holds a dead holder's pid), so
    the file is read again for up to a second until it names a live process."""
    deadline = time.monotonic() + 1.0
    while True:
        handle.seek(0)
        holder = handle.read().strip()
        if _alive(holder) or time.monotonic() > deadline:
            return holder or "unknown"
        time.sleep(0.01)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class OutputLock:
    """An exclusive OS lock (`flock`) on `output_dir/.lock`.

    The OS releases it when the holder dies (even by SIGKILL), so a killed run
    never blocks the next one. The file holds the holder's pid, which the
    refusal names. Entering the lock of a directory this process already holds
    is a no-op (the command line takes it before `train` does). A run that
    created the directory and fails before writing anything else (bad data)
    removes it again.

    Example:

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with OutputLock(folder):
    ...     (folder / ".lock").read_text() == str(os.getpid())
    True
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.directory = Path(output_dir)
        self.path = self.directory / LOCK_FILE
        self.handle: IO[str] | None = None
        self.created = False

    def __enter__(self) -> OutputLock:
        key = self.directory.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        for attempt in range(3):
            self.created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(self.path, "a+")
                break
            except FileNotFoundError:  # a failing holder removed the directory just now
                if attempt == 2:
                    raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise RunError(
                f"Another run (pid {holder}) is writing {self.directory}. "
                "Wait for it or choose another output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _HELD[key] = [handle, 1]
        self.handle = handle
        return self

    def __exit__(self, error_type, *exc_info) -> None:
        key = self.directory.resolve()
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            if error_type is not None and self.created:
                try:  # a failed start leaves no directory behind, only if nothing else is in it
                    if [p.name for p in self.directory.iterdir()] == [LOCK_FILE]:
                        self.path.unlink()
                        self.directory.rmdir()
                except OSError:
                    pass
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            entry[0].close()
