"""Atomic file writes: the one place that writes a file to a temporary name,
fsyncs it and renames it into place.

A reader (or a crash) never sees a half-written file, and an earlier version
of the file survives a failed write. Checkpoints, training logs, data files
and evaluation reports all write through here.

Example:

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> write_text_atomically(path, "complete or absent")
>>> path.read_text()
'complete or absent'
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_file(path: str | os.PathLike) -> None:
    """Flushes a written file's data to the disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: str | os.PathLike) -> None:
    """Makes a rename in `path` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(target: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Writes `target` all at once: `write(temporary_path)` fills a temporary file
    beside it, which is fsynced and renamed over `target` (and the rename made
    durable); the temporary file is removed when `write` fails. An `OSError`
    about the temporary file is raised naming `target`, the path the user
    asked for."""
    target = Path(target)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        os.close(handle)
        write(temporary)
        fsync_file(temporary)
        os.replace(temporary, target)
        fsync_directory(target.parent)
    except OSError as error:
        name = os.path.basename(str(error.filename or ""))
        if error.filename is not None and not (
            name.startswith(f".{target.name}.") and name.endswith(".tmp")
        ):
            raise  # about another path
        raise OSError(error.errno, error.strerror, str(target)) from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (see `write_atomically`)."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def save_keras_atomically(model: Any, path: str | os.PathLike) -> None:
    """`model.save(path)` atomically, through a temporary `.keras` name (Keras
    insists on the suffix)."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.keras")
    try:
        model.save(temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
