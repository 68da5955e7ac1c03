"""Evaluation and expert analysis.

* `weighted_quantile_loss`, `mean_absolute_scaled_error`, `aggregate_relative_score`
  and their helpers: the Chronos benchmark's metrics, in numpy (`metrics.py`).
* `evaluate`, `run_evaluate`, `markdown_comparison`: scores of a model and of the Naive
  and Seasonal Naive baselines on the last `prediction_length` points of every series
  (`evaluate.py`).
* `analyze_routing`, `write_routing_report`, `run_analyze_experts`: which experts a
  MoE model chooses and what they attract (`routing.py`; the report in `routing_report.py`,
  the series features in `features.py`).
* `plot_forecast`, `plot_training_curves` and the routing plots (`plots.py`).
"""

from chronos_moe.evaluation.datasets import EvaluationDataset, seasonality_from_freq
from chronos_moe.evaluation.evaluate import (
    DEFAULT_QUANTILE_LEVELS,
    DatasetResult,
    EvaluationResult,
    evaluate,
    markdown_comparison,
    naive_forecast,
    run_evaluate,
    seasonal_naive_forecast,
)
from chronos_moe.evaluation.metrics import (
    absolute_scaled_errors,
    aggregate_relative_score,
    mean_absolute_scaled_error,
    relative_score,
    seasonal_error,
    weighted_quantile_loss,
)
from chronos_moe.evaluation.plots import (
    plot_expert_examples,
    plot_expert_utilization,
    plot_forecast,
    plot_gate_distribution,
    plot_layer_utilization,
    plot_training_curves,
)
from chronos_moe.evaluation.routing import (
    RoutingAnalysis,
    analyze_routing,
    run_analyze_experts,
    series_features,
    write_routing_report,
)

__all__ = [
    "DEFAULT_QUANTILE_LEVELS",
    "DatasetResult",
    "EvaluationDataset",
    "EvaluationResult",
    "RoutingAnalysis",
    "absolute_scaled_errors",
    "aggregate_relative_score",
    "analyze_routing",
    "evaluate",
    "markdown_comparison",
    "mean_absolute_scaled_error",
    "naive_forecast",
    "plot_expert_examples",
    "plot_expert_utilization",
    "plot_forecast",
    "plot_gate_distribution",
    "plot_layer_utilization",
    "plot_training_curves",
    "relative_score",
    "run_analyze_experts",
    "run_evaluate",
    "seasonal_error",
    "seasonal_naive_forecast",
    "seasonality_from_freq",
    "series_features",
    "weighted_quantile_loss",
    "write_routing_report",
]
