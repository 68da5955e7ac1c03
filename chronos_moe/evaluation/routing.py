"""Expert analysis: which experts a `ChronosMoE` model routes each series to, how
evenly, how confidently, and what kind of series each expert attracts."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.evaluation.datasets import as_datasets
from chronos_moe.evaluation.features import (  # noqa: F401 (series_features re-exported)
    FEATURES,
    feature_mean,
    feature_table,
    series_features,
)
from chronos_moe.evaluation.metrics import check_positive_int
from chronos_moe.evaluation.routing_report import write_routing_report


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
    routes = _routes_in_batches(moe_pipeline, contexts, batch_size)
    expert_indices = routes["expert_indices"].astype(np.int64)
    gates = routes["gates"].astype(np.float64)
    probs = routes["router_probs"].astype(np.float64)
    num_experts = probs.shape[1]
    dataset = np.asarray(dataset)

    with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log 0 = 0
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    utilization = np.bincount(expert_indices.ravel(), minlength=num_experts) / expert_indices.size
    gate_mass = np.bincount(expert_indices.ravel(), weights=gates.ravel(), minlength=num_experts)
    features = feature_table(contexts)
    # (E, n): the gate of each expert for each series, 0 where it was not chosen.
    weights = np.stack(
        [np.where(expert_indices == e, gates, 0.0).sum(axis=1) for e in range(num_experts)]
    )
    routed = (expert_indices[None] == np.arange(num_experts)[:, None, None]).any(axis=2)  # (E, n)
    expert_features = {
        name: np.array([feature_mean(name, values, w) for w in weights])
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
        layer_shares=routes.get("layer_shares"),
    )


def _routes_in_batches(moe_pipeline: Any, contexts: list, batch_size: int) -> dict:
    """`moe_pipeline.route` of `contexts`, `batch_size` series at a time, joined:
    float64 arrays, `layer_shares` only for token-level experts."""
    routes = [
        moe_pipeline.route(contexts[i : i + batch_size])
        for i in range(0, len(contexts), batch_size)
    ]
    return {key: np.concatenate([r[key] for r in routes]).astype(np.float64) for key in routes[0]}


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
