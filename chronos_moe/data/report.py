"""`DataReport`: what each data source held and why series or windows were left out."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class SourceReport:
    """Counts for one source (an Arrow file or in-memory data).

    Attributes:
        name: str. The file path or source name.
        rows: int. Rows (entries) in the source.
        series: int. Univariate series after splitting multivariate rows.
        kept: int. Series long and complete enough to give windows.
        too_short: int. Series dropped for being shorter than
            `min_past + prediction_length`.
        too_many_missing: int. Series dropped for a missing share above
            `max_missing_prop`.
        inf_values: int. ±inf values read as missing.
        all_nan_past: int. Training windows skipped so far because their past
            held no observed value.
    """

    name: str
    rows: int
    series: int
    kept: int
    too_short: int
    too_many_missing: int
    inf_values: int
    all_nan_past: int = 0


@dataclasses.dataclass
class DataReport:
    """Per-source counts of the data a `ChronosDataset` reads; `str()` is a table.

    Example:

    >>> report = DataReport([SourceReport("a.arrow", 10, 10, 8, 1, 1, 0)])
    >>> print(report)
    source   rows  series  kept  too_short  too_many_missing  inf_values  all_nan_past
    a.arrow    10      10     8          1                 1           0             0
    >>> report.to_dict()["sources"][0]["kept"]
    8
    """

    sources: list[SourceReport]

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [dataclasses.asdict(source) for source in self.sources]}

    def __str__(self) -> str:
        names = [field.name for field in dataclasses.fields(SourceReport)]
        header = ["source"] + names[1:]
        rows = [header] + [
            [str(getattr(source, name)) for name in names] for source in self.sources
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        return "\n".join(lines)
