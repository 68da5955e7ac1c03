"""The results of an evaluation: per-dataset scores (`DatasetResult`), the
whole evaluation (`EvaluationResult`: table, CSV, aggregate relative scores)
and the Markdown comparison of several models (`markdown_comparison`)."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

BASELINES = ("naive", "seasonal_naive")
METHODS = ("model", *BASELINES)
METRICS = ("wql", "mase")

# Why a series is left out, as counted in `DatasetResult.skipped`.
SKIP_REASONS = {
    "too_short": "not longer than prediction_length",
    "no_history": "no observed value before the last prediction_length points",
    "no_target": "no observed value in the last prediction_length points",
}


# ---- results --------------------------------------------------------------------------


@dataclasses.dataclass
class DatasetResult:
    """The scores of one dataset.

    Attributes:
        name: str. The dataset's name.
        seasonality: int. The seasonality used by MASE and Seasonal Naive.
        num_series: int. Series evaluated.
        skipped: dict `reason -> count` of the series left out (`SKIP_REASONS`).
        series_index: int array `(num_series,)`: the position of each evaluated
            series in the dataset.
        scores: `method -> metric -> float`, dataset-level scores of `"model"`,
            `"naive"` and `"seasonal_naive"` for `"wql"` and `"mase"`.
        relative: `method -> metric -> float`: each score divided by Seasonal
            Naive's.
        per_series: `method -> metric -> float64 array (num_series,)`: each
            series' WQL and absolute scaled error (NaN where undefined).
    """

    name: str
    seasonality: int
    num_series: int
    skipped: dict[str, int]
    series_index: np.ndarray
    scores: dict[str, dict[str, float]]
    relative: dict[str, dict[str, float]]
    per_series: dict[str, dict[str, np.ndarray]]

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate` returns: per-dataset scores and the aggregate relative scores.

    Attributes:
        datasets: list of `DatasetResult`, in the order of the data.
        prediction_length: int.
        quantile_levels: tuple of floats, the levels WQL averages over.
        relative: `method -> metric -> float`: the geometric mean over datasets of
            each method's score relative to Seasonal Naive's (Seasonal Naive's
            own is exactly 1).
    """

    datasets: list[DatasetResult]
    prediction_length: int
    quantile_levels: tuple[float, ...]
    relative: dict[str, dict[str, float]]

    @property
    def relative_wql(self) -> float:
        """The model's aggregate relative WQL."""
        return self.relative["model"]["wql"]

    @property
    def relative_mase(self) -> float:
        """The model's aggregate relative MASE."""
        return self.relative["model"]["mase"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per dataset, then one for the aggregate (the CSV's rows)."""
        rows = []
        for d in self.datasets:
            row = {
                "dataset": d.name,
                "num_series": d.num_series,
                "num_skipped": d.num_skipped,
                "seasonality": d.seasonality,
            }
            for method in METHODS:
                for metric in METRICS:
                    row[f"{method}_{metric}"] = d.scores[method][metric]
            for method in ("model", "naive"):
                for metric in METRICS:
                    row[f"{method}_relative_{metric}"] = d.relative[method][metric]
            rows.append(row)
        aggregate = {key: "" for key in rows[0]}
        aggregate["dataset"] = "aggregate (geometric mean)"
        aggregate["num_series"] = sum(d.num_series for d in self.datasets)
        aggregate["num_skipped"] = sum(d.num_skipped for d in self.datasets)
        for method in ("model", "naive"):
            for metric in METRICS:
                aggregate[f"{method}_relative_{metric}"] = self.relative[method][metric]
        return rows + [aggregate]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Writes `rows()` as CSV (numbers with full precision), atomically. Returns
        the path."""
        from chronos_moe.atomic import write_atomically

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()

        def write(temporary: str) -> None:
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(path, write)  # a reader never sees a half-written file
        return path

    def to_markdown(self) -> str:
        """A Markdown table: one row per dataset, then the aggregate relative scores."""
        lines = [
            "| dataset | series | WQL | MASE | Naive WQL | Naive MASE | Seasonal Naive WQL "
            "| Seasonal Naive MASE | relative WQL | relative MASE |",
            "|---" * 10 + "|",
        ]
        for d in self.datasets:
            values = [d.scores[m][k] for m in METHODS for k in METRICS]
            values += [d.relative["model"][k] for k in METRICS]
            lines.append(
                f"| {d.name} | {d.num_series} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
            )
        cells = ["aggregate (geometric mean)"] + [""] * 7
        cells += [f"**{self.relative['model'][k]:.4f}**" for k in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def table(self) -> str:
        """A plain-text table: one line per dataset, then the aggregate relative scores."""
        header = ["dataset", "series", "skipped", "season"]
        header += ["WQL", "MASE", "Naive WQL", "Naive MASE", "SNaive WQL", "SNaive MASE"]
        header += ["rel. WQL", "rel. MASE"]
        lines = []
        for d in self.datasets:
            values = [d.scores[m][k] for m in METHODS for k in METRICS]
            values += [d.relative["model"][k] for k in METRICS]
            lines.append(
                [d.name, str(d.num_series), str(d.num_skipped), str(d.seasonality)]
                + [f"{v:.4f}" for v in values]
            )
        footer = [f"aggregate ({len(self.datasets)} datasets)", "", "", ""] + [""] * 6
        footer += [f"{self.relative['model'][k]:.4f}" for k in METRICS]
        text = _format_table(header, lines + [footer])
        naive = self.relative["naive"]
        return (
            f"{text}\nAggregate relative score vs Seasonal Naive (geometric mean over datasets): "
            f"WQL {self.relative_wql:.4f}, MASE {self.relative_mase:.4f} "
            f"(Naive: WQL {naive['wql']:.4f}, MASE {naive['mase']:.4f})"
        )


def markdown_comparison(results: Mapping[str, EvaluationResult]) -> str:
    """A Markdown table comparing models evaluated on the same data: one row per
    model, then Naive and Seasonal Naive; per dataset its WQL and MASE, then the
    aggregate scores relative to Seasonal Naive.

    Args:
        results: `model name -> EvaluationResult`, all of the same datasets and
            prediction length (the baselines are taken from the first).

    Returns:
        str, the table.

    Example:

    >>> import numpy as np
    >>> from chronos_moe.evaluation import evaluate
    >>> series = [np.sin(np.arange(40.0)) + 2, np.arange(30.0)]
    >>> naive = evaluate("naive", series, prediction_length=4, seasonality=6)
    >>> print(markdown_comparison({"naive as model": naive}).splitlines()[-1])
    | Seasonal Naive | 0.2086 | 0.8636 | 1.0000 | 1.0000 |
    """
    if not results:
        raise ValueError("`results` must hold at least one EvaluationResult. Received: {}")
    first = next(iter(results.values()))
    names = [d.name for d in first.datasets]
    for label, result in results.items():
        if [d.name for d in result.datasets] != names or (
            result.prediction_length != first.prediction_length
        ):
            raise ValueError(
                "`results` must be evaluations of the same datasets with the same "
                f"prediction_length. Received: {label!r} on {[d.name for d in result.datasets]} "
                f"(prediction_length={result.prediction_length}), expected {names} "
                f"(prediction_length={first.prediction_length})"
            )
    columns = [f"{name} {metric.upper()}" for name in names for metric in METRICS]
    lines = [
        "| model | " + " | ".join(columns) + " | relative WQL | relative MASE |",
        "|---" * (len(columns) + 3) + "|",
    ]
    rows = [(label, result, "model") for label, result in results.items()]
    rows += [("Naive", first, "naive"), ("Seasonal Naive", first, "seasonal_naive")]
    for label, result, method in rows:
        values = [d.scores[method][m] for d in result.datasets for m in METRICS]
        values += [result.relative[method][m] for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):  # the name left-aligned, numbers right-aligned
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])
