"""Expert analysis: which experts a `ChronosMoE` model routes each series to, how
evenly, how confidently, and what kind of series each expert attracts."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.evaluation.datasets import as_datasets
from chronos_moe.evaluation.metrics import check_positive_int

FEATURES = ("scale", "seasonality_strength", "trend_strength", "noise_level")


def series_features(values: Any) -> dict[str, float]:
    """Descriptive features of one series (the context a router reads).

    - `scale`: mean `|x|` over the observed values (the tokenizer's scale).
    - `trend_strength`: the R² of a straight line fitted to the series, in [0, 1].
    - `seasonality_strength`: the highest peak of the autocorrelation of the
      detrended series over lags 2 … n/2, clipped at 0: near 1 for a clean
      periodic series, near 0 for noise or a pure trend.
    - `noise_level`: `std(Δx) / (√2 · std(x))`, clipped to 1: 0 for a smooth
      series, about 1 for white noise.

    Missing values inside the series are interpolated linearly, leading and
    trailing ones dropped. With no observed value every feature is NaN; with
    fewer than 4, all but `scale`; a constant series has 0 trend, seasonality
    and noise.

    Returns:
        dict `feature -> float` with the keys of `FEATURES`.

    Example:

    >>> import numpy as np
    >>> features = series_features(np.sin(2 * np.pi * np.arange(48) / 12))
    >>> round(features["seasonality_strength"], 2), round(features["trend_strength"], 2)
    (0.73, 0.04)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    features = dict.fromkeys(FEATURES, math.nan)
    observed = np.flatnonzero(~np.isnan(values))
    if observed.size == 0:
        return features
    features["scale"] = float(np.mean(np.abs(values[observed])))
    if observed.size < 4:
        return features
    x = values[observed[0] : observed[-1] + 1]
    steps = np.arange(len(x), dtype=np.float64)
    known = ~np.isnan(x)
    x = np.interp(steps, steps[known], x[known])
    variance = x.var()
    if variance == 0:
        features.update(trend_strength=0.0, seasonality_strength=0.0, noise_level=0.0)
        return features
    slope, intercept = np.polyfit(steps, x, 1)
    residual = x - (intercept + slope * steps)
    features["trend_strength"] = float(max(0.0, 1.0 - residual.var() / variance))
    features["seasonality_strength"] = 0.0
    if residual.var() > 1e-12 * variance:  # a straight line leaves only rounding errors
        acf = np.correlate(residual, residual, "full")[len(x) - 1 :] / (residual @ residual)
        acf = acf[: len(x) // 2 + 1]  # lags 0 … n/2
        lags = np.arange(2, len(acf) - 1)
        peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
        if peaks.size:
            features["seasonality_strength"] = float(max(0.0, acf[peaks].max()))
    noise = np.std(np.diff(x)) / (math.sqrt(2) * math.sqrt(variance))
    features["noise_level"] = float(min(1.0, noise))
    return features


@dataclasses.dataclass
class RoutingAnalysis:
    """What `analyze_routing` returns. Series are in the order of the data,
    datasets one after another.

    Attributes:
        dataset_names: list of str, the datasets.
        dataset: int array `(n_series,)`: each series' dataset (an index into
            `dataset_names`).
        series_index: int array `(n_series,)`: each series' position in its dataset.
        contexts: list of float arrays: the part of each series the router read
            (its last `context_length` values).
        expert_indices: int array `(n_series, top_k)`: the chosen experts, best first.
        gates: float array `(n_series, top_k)`: their weights.
        router_probs: float array `(n_series, num_experts)`: the router's softmax.
        entropy: float array `(n_series,)`: entropy of `router_probs` in nats (0 =
            certain, `log(num_experts)` = undecided).
        utilization: float array `(num_experts,)`: each expert's share of the
            `n_series · top_k` routing slots.
        gate_share: float array `(num_experts,)`: each expert's share of the total
            gate weight.
        features: `feature -> float array (n_series,)` (`series_features`).
        expert_features: `feature -> float array (num_experts,)`: the mean feature
            of the series routed to each expert, each series weighted by its gate
            for the expert (with `top_k > 1` every series reaches several experts;
            the gates tell which one it mostly uses). `scale`, which spans orders
            of magnitude, is averaged geometrically (over positive scales). NaN for
            an unused expert.
        dataset_counts: int array `(n_datasets, num_experts)`: series of each
            dataset routed to each expert.
        layer_shares: float array `(n_series, layers, num_experts)` or None:
            token-level experts only, each expert layer's share of the series'
            token slots per expert (a series' "route" is then its `top_k` most
            used experts, see `ChronosPipeline.route`).
    """

    dataset_names: list[str]
    dataset: np.ndarray
    series_index: np.ndarray
    contexts: list[np.ndarray]
    expert_indices: np.ndarray
    gates: np.ndarray
    router_probs: np.ndarray
    entropy: np.ndarray
    utilization: np.ndarray
    gate_share: np.ndarray
    features: dict[str, np.ndarray]
    expert_features: dict[str, np.ndarray]
    dataset_counts: np.ndarray
    layer_shares: np.ndarray | None = None

    @property
    def layer_utilization(self) -> np.ndarray | None:
        """float array `(layers, num_experts)`: each token-level expert layer's
        share of all token slots per expert (mean over series); None at the
        series level."""
        return None if self.layer_shares is None else self.layer_shares.mean(axis=0)

    @property
    def num_experts(self) -> int:
        return self.router_probs.shape[1]

    @property
    def top_k(self) -> int:
        return self.expert_indices.shape[1]

    @property
    def mean_entropy(self) -> float:
        """Mean routing entropy over series, in nats."""
        return float(self.entropy.mean())

    @property
    def utilization_entropy(self) -> float:
        """Entropy of `utilization` in nats: `log(num_experts)` when perfectly even."""
        shares = self.utilization[self.utilization > 0]
        return float(-(shares * np.log(shares)).sum())

    @property
    def dataset_shares(self) -> np.ndarray:
        """float array `(num_experts, n_datasets)`: of the series routed to each
        expert, the share from each dataset (NaN for an unused expert)."""
        counts = self.dataset_counts.T.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)

    def series_routed_to(self, expert: int) -> np.ndarray:
        """Positions (in this analysis) of the series routed to `expert`, highest gate first."""
        rows, columns = np.nonzero(self.expert_indices == expert)
        return rows[np.argsort(-self.gates[rows, columns], kind="stable")]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per series: dataset, position, experts, gates, entropy, features."""
        rows = []
        for i in range(len(self.dataset)):
            row = {
                "dataset": self.dataset_names[self.dataset[i]],
                "series": int(self.series_index[i]),
                "experts": " ".join(map(str, self.expert_indices[i].tolist())),
                "gates": " ".join(f"{g:.6f}" for g in self.gates[i]),
                "entropy": float(self.entropy[i]),
            }
            row.update({name: float(self.features[name][i]) for name in FEATURES})
            rows.append(row)
        return rows


def analyze_routing(moe_pipeline: Any, data: Any, batch_size: int = 256) -> RoutingAnalysis:
    """Routes every series of `data` and summarises the experts' choices.

    Args:
        moe_pipeline: `ChronosPipeline` of a `ChronosMoE` model.
        data: as for `evaluate`: Arrow file path(s), a dict `name -> series`, or
            the series of one dataset. Whole series are routed (the router reads
            their last `context_length` values).
        batch_size: int. Series per routing call. Defaults to 256.

    Returns:
        `RoutingAnalysis`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe import ChronosPipeline, ChronosT5, build_moe_chronos
    >>> base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1,
    ...     chronos_config={"n_tokens": 64, "context_length": 32, "prediction_length": 4})
    >>> pipeline = ChronosPipeline(build_moe_chronos(base, num_experts=4, top_k=2))
    >>> analysis = analyze_routing(pipeline, [np.arange(40.0), np.ones(20)])
    >>> analysis.expert_indices.shape, float(analysis.utilization.sum())
    ((2, 2), 1.0)
    """
    from chronos_moe.moe.model import ChronosMoE

    if not isinstance(getattr(moe_pipeline, "model", None), ChronosMoE):
        raise TypeError(
            "`moe_pipeline` must be a ChronosPipeline of a ChronosMoE model (build one with "
            f"build_moe_chronos). Received: {type(getattr(moe_pipeline, 'model', moe_pipeline))}"
        )
    batch_size = check_positive_int("batch_size", batch_size)
    datasets = as_datasets(data)
    context_length = moe_pipeline.model_context_length
    contexts, dataset, series_index = [], [], []
    for number, d in enumerate(datasets):
        contexts += [values[-context_length:] for values in d.series]
        dataset += [number] * len(d.series)
        series_index += range(len(d.series))
    routes = [
        moe_pipeline.route(contexts[i : i + batch_size])
        for i in range(0, len(contexts), batch_size)
    ]
    expert_indices = np.concatenate([r["expert_indices"] for r in routes]).astype(np.int64)
    gates = np.concatenate([r["gates"] for r in routes]).astype(np.float64)
    probs = np.concatenate([r["router_probs"] for r in routes]).astype(np.float64)
    layer_shares = (
        np.concatenate([r["layer_shares"] for r in routes]).astype(np.float64)
        if "layer_shares" in routes[0]
        else None
    )
    num_experts = probs.shape[1]
    dataset = np.asarray(dataset)

    with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log 0 = 0
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    utilization = np.bincount(expert_indices.ravel(), minlength=num_experts) / expert_indices.size
    gate_mass = np.bincount(expert_indices.ravel(), weights=gates.ravel(), minlength=num_experts)
    features = {name: np.empty(len(contexts)) for name in FEATURES}
    for i, values in enumerate(contexts):
        for name, value in series_features(values).items():
            features[name][i] = value
    # (E, n): the gate of each expert for each series, 0 where it was not chosen.
    weights = np.stack(
        [np.where(expert_indices == e, gates, 0.0).sum(axis=1) for e in range(num_experts)]
    )
    routed = (expert_indices[None] == np.arange(num_experts)[:, None, None]).any(axis=2)  # (E, n)
    expert_features = {
        name: np.array([_feature_mean(name, values, w) for w in weights])
        for name, values in features.items()
    }
    dataset_counts = np.array(
        [
            [np.sum(routed[e] & (dataset == d)) for e in range(num_experts)]
            for d in range(len(datasets))
        ]
    )
    return RoutingAnalysis(
        dataset_names=[d.name for d in datasets],
        dataset=dataset,
        series_index=np.asarray(series_index),
        contexts=contexts,
        expert_indices=expert_indices,
        gates=gates,
        router_probs=probs,
        entropy=entropy,
        utilization=utilization,
        gate_share=gate_mass / gate_mass.sum(),
        features=features,
        expert_features=expert_features,
        dataset_counts=dataset_counts,
        layer_shares=layer_shares,
    )


def _feature_mean(name: str, values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The (weighted) mean of a feature over the series where it is defined; for
    `scale`, the geometric mean over positive scales."""
    weights = np.ones_like(values) if weights is None else weights
    keep = ~np.isnan(values) & (weights > 0)
    if name == "scale":
        keep &= values > 0
    if not keep.any():
        return math.nan
    values, weights = values[keep], weights[keep]
    if name == "scale":
        return float(np.exp(np.average(np.log(values), weights=weights)))
    return float(np.average(values, weights=weights))


# ---- report ---------------------------------------------------------------------------


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
    from chronos_moe.evaluation import plots

    examples_per_expert = check_positive_int("examples_per_expert", examples_per_expert)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    experts = range(analysis.num_experts)
    plots.plot_expert_utilization(
        analysis.utilization, analysis.gate_share, path=output / "utilization.png"
    )
    if analysis.layer_utilization is not None:
        plots.plot_layer_utilization(analysis.layer_utilization, path=output / "layers.png")
    plots.plot_gate_distribution(
        analysis.expert_indices, analysis.gates, analysis.num_experts, path=output / "gates.png"
    )
    examples, titles = [], []
    for e in experts:
        chosen = analysis.series_routed_to(e)[:examples_per_expert]
        examples.append([analysis.contexts[i] for i in chosen])
        titles.append([_series_label(analysis, i, e) for i in chosen])
    plots.plot_expert_examples(examples, titles, path=output / "examples.png")
    rows = analysis.rows()
    with open(output / "routing.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    n, k, num_experts = len(analysis.dataset), analysis.top_k, analysis.num_experts
    routed_counts = [len(analysis.series_routed_to(e)) for e in experts]
    lines = [
        f"# {title}",
        "",
        f"{n} series from {len(analysis.dataset_names)} dataset(s), {num_experts} experts, "
        f"top-{k} routing. The router reads the last "
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
    for e in experts:
        mask = analysis.expert_indices == e
        mean_gate = analysis.gates[mask].mean() if mask.any() else math.nan
        main = (
            f"{analysis.dataset_names[int(np.argmax(shares[e]))]} ({np.max(shares[e]):.0%})"
            if routed_counts[e]
            else "–"
        )
        cells = [
            str(e),
            f"{analysis.utilization[e]:.1%}",
            f"{analysis.gate_share[e]:.1%}",
            str(routed_counts[e]),
            _number(mean_gate),
        ]
        cells += [_number(analysis.expert_features[name][e]) for name in FEATURES] + [main]
        lines.append("| " + " | ".join(cells) + " |")
    overall = [_number(_feature_mean(name, analysis.features[name])) for name in FEATURES]
    lines.append("| all | 100% | 100% | " + f"{n} | – | " + " | ".join(overall) + " | – |")
    lines += [
        "",
        "## Datasets",
        "",
        "Share of each dataset's series routed to each expert (each series counts "
        f"once per chosen expert, so a row sums to {k}).",
        "",
        "| dataset | series | " + " | ".join(f"expert {e}" for e in experts) + " |",
        "|---" * (2 + num_experts) + "|",
    ]
    for d, name in enumerate(analysis.dataset_names):
        size = int(np.sum(analysis.dataset == d))
        cells = [f"{c / size:.1%}" for c in analysis.dataset_counts[d]]
        lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    if analysis.layer_utilization is not None:
        lines += [
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
            "|---" * (1 + num_experts) + "|",
        ]
        for layer, shares_of_layer in enumerate(analysis.layer_utilization):
            cells = [f"{share:.1%}" for share in shares_of_layer]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += [
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
    report = output / "report.md"
    report.write_text("\n".join(lines))
    return report


def _series_label(analysis: RoutingAnalysis, i: int, expert: int) -> str:
    gate = analysis.gates[i][analysis.expert_indices[i] == expert][0]
    name = analysis.dataset_names[analysis.dataset[i]]
    return f"{name}, series {analysis.series_index[i]}: gate {gate:.2f}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) >= 1000 or abs(value) < 0.01 else f"{value:.3f}"


def run_analyze_experts(
    model_dir: str | os.PathLike,
    data_paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    batch_size: int = 256,
    examples_per_expert: int = 3,
) -> Path:
    """`chronos-moe analyze-experts`: loads a MoE checkpoint, routes every series
    of the Arrow files, writes the report (`write_routing_report`) into
    `output_dir` and prints a summary.

    Returns:
        The path of `report.md`.
    """
    from chronos_moe.moe.model import ChronosMoE
    from chronos_moe.pipeline import ChronosPipeline

    pipeline = ChronosPipeline.from_pretrained(model_dir)
    if not isinstance(pipeline.model, ChronosMoE):
        raise ValueError(
            "analyze-experts needs a Mixture-of-Experts checkpoint (one written by a run with "
            f"`use_moe: true`). Received: {model_dir} holds a dense "
            f"{type(pipeline.model).__name__}"
        )
    paths = [data_paths] if isinstance(data_paths, (str, os.PathLike)) else list(data_paths)
    analysis = analyze_routing(pipeline, paths, batch_size=batch_size)
    report = write_routing_report(
        analysis, output_dir, examples_per_expert, title=f"Expert analysis: {model_dir}"
    )
    print(
        f"Routed {len(analysis.dataset)} series: {analysis.num_experts} experts, "
        f"top-{analysis.top_k}, mean routing entropy {analysis.mean_entropy:.3f} nats"
    )
    for e in range(analysis.num_experts):
        print(f"  expert {e}: {analysis.utilization[e]:.1%} of the slots")
    if analysis.layer_utilization is not None:
        for layer, shares in enumerate(analysis.layer_utilization):
            print(f"  layer {layer}: " + " ".join(f"{share:.0%}" for share in shares))
    print(f"Wrote {report}")
    return report
