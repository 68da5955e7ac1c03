"""`DataError`: the one error type for bad training data."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad training data, named by file and, where it applies, by row and field.

    Raised when data is opened (before any model is built or any step is run):
    a missing or unreadable file, a file that is not Arrow IPC, a missing or
    mistyped column, an empty file, a file without a single usable series, or a
    data-loader state that does not belong to the data it is restored on.

    Args:
        message: str. What is wrong, in plain words.
        path: str or path-like. The file (or in-memory source name) at fault.
            Defaults to `None`.
        row: int. The 0-based row of the file at fault. Defaults to `None`.
        field: str. The column at fault (`"start"`, `"target"`, …). Defaults
            to `None`.

    Example:

    >>> error = DataError("expected a list of numbers", path="a.arrow", row=3, field="target")
    >>> str(error)
    "a.arrow: row 3, field 'target': expected a list of numbers"
    >>> error.path, error.row, error.field
    ('a.arrow', 3, 'target')
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.row = row
        self.field = field
        self.message = message
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = "" if self.path is None else f"{self.path}: "
        if where:
            prefix += ", ".join(where) + ": "
        super().__init__(prefix + message)

    def __reduce__(self):  # keeps the keyword arguments when pickled across processes
        return (type(self), (self.message, self.path, self.row, self.field))
