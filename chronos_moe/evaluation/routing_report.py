"""The expert-analysis report of a `RoutingAnalysis`: `report.md` with its
figures and `routing.csv`."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chronos_moe.evaluation.features import FEATURES, feature_mean
from chronos_moe.evaluation.metrics import check_positive_int

if TYPE_CHECKING:
    from chronos_moe.evaluation.routing import RoutingAnalysis


def write_routing_report(
    analysis: RoutingAnalysis,
    output_dir: str | os.PathLike,
    examples_per_expert: int = 3,
    title: str = "Expert analysis",
) -> Path:
    """Writes `report.md` with its figures (`utilization.png`, `gates.png`,
    `examples.png`, and for token-level experts `layers.png`) and `routing.csv`
    (one row per series) into `output_dir`.

    Returns:
        The path of `report.md`.
    """
    examples_per_expert = check_positive_int("examples_per_expert", examples_per_expert)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    _write_figures(analysis, output, examples_per_expert)
    rows = analysis.rows()
    with open(output / "routing.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = (
        _summary_section(analysis, title)
        + _experts_section(analysis)
        + _datasets_section(analysis)
        + _layers_section(analysis)
        + _closing_sections(examples_per_expert)
    )
    report = output / "report.md"
    report.write_text("\n".join(lines))
    return report


def _write_figures(analysis: RoutingAnalysis, output: Path, examples_per_expert: int) -> None:
    """`utilization.png`, `layers.png` (token level), `gates.png` and `examples.png`."""
    from chronos_moe.evaluation import plots

    plots.plot_expert_utilization(
        analysis.utilization, analysis.gate_share, path=output / "utilization.png"
    )
    if analysis.layer_utilization is not None:
        plots.plot_layer_utilization(analysis.layer_utilization, path=output / "layers.png")
    plots.plot_gate_distribution(
        analysis.expert_indices, analysis.gates, analysis.num_experts, path=output / "gates.png"
    )
    examples, titles = [], []
    for e in range(analysis.num_experts):
        chosen = analysis.series_routed_to(e)[:examples_per_expert]
        examples.append([analysis.contexts[i] for i in chosen])
        titles.append([_series_label(analysis, i, e) for i in chosen])
    plots.plot_expert_examples(examples, titles, path=output / "examples.png")


def _summary_section(analysis: RoutingAnalysis, title: str) -> list[str]:
    """The title, what was routed, and the utilisation section."""
    num_experts = analysis.num_experts
    return [
        f"# {title}",
        "",
        f"{len(analysis.dataset)} series from {len(analysis.dataset_names)} dataset(s), "
        f"{num_experts} experts, top-{analysis.top_k} routing. The router reads the last "
        f"{max(len(c) for c in analysis.contexts)} values of each series.",
        "",
        "## Utilisation",
        "",
        "![utilisation](utilization.png)",
        "",
        f"- Routing entropy per series: mean {analysis.mean_entropy:.3f} nats "
        f"(0 = always certain, {math.log(num_experts):.3f} = undecided).",
        f"- Entropy of the utilisation: {analysis.utilization_entropy:.3f} nats "
        f"({math.log(num_experts):.3f} = perfectly even).",
    ]


def _experts_section(analysis: RoutingAnalysis) -> list[str]:
    """The table of what each expert attracts, with an `all` row."""
    lines = [
        "",
        "## What each expert attracts",
        "",
        "Mean features of the series routed to each expert, weighted by the expert's gate "
        "(`all` = every series, unweighted); scale is a geometric mean.",
        "",
        "| expert | slots | gate weight | series | mean gate | "
        + " | ".join(name.replace("_", " ") for name in FEATURES)
        + " | main dataset |",
        "|---" * (6 + len(FEATURES)) + "|",
    ]
    shares = analysis.dataset_shares
    for e in range(analysis.num_experts):
        mask = analysis.expert_indices == e
        mean_gate = analysis.gates[mask].mean() if mask.any() else math.nan
        routed = len(analysis.series_routed_to(e))
        main = (
            f"{analysis.dataset_names[int(np.argmax(shares[e]))]} ({np.max(shares[e]):.0%})"
            if routed
            else "–"
        )
        cells = [
            str(e),
            f"{analysis.utilization[e]:.1%}",
            f"{analysis.gate_share[e]:.1%}",
            str(routed),
            _number(mean_gate),
        ]
        cells += [_number(analysis.expert_features[name][e]) for name in FEATURES] + [main]
        lines.append("| " + " | ".join(cells) + " |")
    overall = [_number(feature_mean(name, analysis.features[name])) for name in FEATURES]
    n = len(analysis.dataset)
    lines.append("| all | 100% | 100% | " + f"{n} | – | " + " | ".join(overall) + " | – |")
    return lines


def _datasets_section(analysis: RoutingAnalysis) -> list[str]:
    """The share of each dataset's series routed to each expert."""
    experts = range(analysis.num_experts)
    lines = [
        "",
        "## Datasets",
        "",
        "Share of each dataset's series routed to each expert (each series counts "
        f"once per chosen expert, so a row sums to {analysis.top_k}).",
        "",
        "| dataset | series | " + " | ".join(f"expert {e}" for e in experts) + " |",
        "|---" * (2 + analysis.num_experts) + "|",
    ]
    for d, name in enumerate(analysis.dataset_names):
        size = int(np.sum(analysis.dataset == d))
        cells = [f"{c / size:.1%}" for c in analysis.dataset_counts[d]]
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return lines


def _layers_section(analysis: RoutingAnalysis) -> list[str]:
    """Token-level experts: each expert layer's shares (nothing at the series level)."""
    if analysis.layer_utilization is None:
        return []
    experts = range(analysis.num_experts)
    lines = [
        "",
        "## Expert layers (token level)",
        "",
        "Share of the context tokens' routing slots that each encoder expert layer gave "
        "to each expert (an even split is 1 / num_experts). The tables above describe "
        "each series by the experts most of its tokens used.",
        "",
        "![expert layers](layers.png)",
        "",
        "| layer | " + " | ".join(f"expert {e}" for e in experts) + " |",
        "|---" * (1 + analysis.num_experts) + "|",
    ]
    for layer, shares_of_layer in enumerate(analysis.layer_utilization):
        cells = [f"{share:.1%}" for share in shares_of_layer]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def _closing_sections(examples_per_expert: int) -> list[str]:
    """The gates and examples figures, and how to read the report."""
    return [
        "",
        "## Gates",
        "",
        "![gates](gates.png)",
        "",
        "## Examples",
        "",
        f"The {examples_per_expert} series with the highest gate for each expert, one row per "
        "expert (the context the router read; each title gives the dataset, the series' "
        "position in it and its gate). Experts that received no series have no row.",
        "",
        "![examples](examples.png)",
        "",
        "## How to read this report",
        "",
        "- *slots*: share of all routing choices (`series × top_k`) that went to the "
        "expert; an even split is 1 / num_experts. An expert near 0% is unused.",
        "- *gate weight*: share of the mixing weight; *mean gate*: how much the expert "
        "counts when it is chosen (1 / top_k = an even mix).",
        "- *scale*: mean |x|; *seasonality strength*: highest autocorrelation peak of the "
        "detrended series (0–1); *trend strength*: R² of a straight line (0–1); *noise "
        "level*: std of the differences relative to white noise (0 smooth – 1 noise). An "
        "expert whose mean differs from `all` specialises in that property.",
        "- *routing entropy*: low means the router is confident about each series.",
        "",
        "Per-series routes and features: `routing.csv`.",
        "",
    ]


def _series_label(analysis: RoutingAnalysis, i: int, expert: int) -> str:
    gate = analysis.gates[i][analysis.expert_indices[i] == expert][0]
    name = analysis.dataset_names[analysis.dataset[i]]
    return f"{name}, series {analysis.series_index[i]}: gate {gate:.2f}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) >= 1000 or abs(value) < 0.01 else f"{value:.3f}"
