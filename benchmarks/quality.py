"""Does routing help? Dense, series- and token-level MoE and their unrouted
controls, trained alike over several seeds and scored on data never trained on.

The study a sceptic asks for (issue 16, item 3):

- **Models** (all from the `tiny` preset, 1024-token vocabulary, trained from
  scratch with the same data, steps, optimiser and batch size per seed):
  `dense`; `series-moe` (4 expert heads, top-2); `series-control` (the same
  head with ONE expert whose residual block is `top_k` times as wide, and a
  router that cannot choose: the MoE's active extra parameters without
  routing); `token-moe` (8 feed-forward experts of width d_ff/4 per block,
  top-2, plus the shared dense FFN: Time-MoE's layout); `token-control` (one
  always-on expert of width `top_k · d_ff/4` beside the shared FFN: the token
  MoE's active parameters without routing).
- **Training data**: TSMixup mixes of demo and KernelSynth series (90%) and
  KernelSynth series (10%), the Chronos paper's proportions; the same files for
  every run.
- **Scores**: WQL and MASE relative to Seasonal Naive, aggregated over datasets
  by the geometric mean (the Chronos benchmark's rule), on (a) held-out
  synthetic series drawn with seeds never used for training and (b) the real
  series of `benchmarks/real_data.py` (yearly, quarterly, monthly, weekly),
  each dataset with its own horizon.
- **Spread**: every variant over `--seeds` (three by default); the table shows
  mean ± standard deviation over seeds, and the verdicts compare the MoE's mean
  against the dense model's mean plus the two spreads.
- **Experts**: the routing report (shares, gates, what each expert's series look
  like) of the first seed's MoE models on the evaluation series.

    python benchmarks/quality.py --output-dir study          # the whole study (~1.5 h, 2 cores)
    python benchmarks/quality.py --output-dir study --quick  # a minute: the pipeline only

Each finished run writes `runs/<variant>-seed<k>.json`; a rerun with the same
output directory skips those (so an interrupted study continues). `report.md`,
`results.json` and `relative_wql.png` are rewritten from all finished runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The training hyperparameters every run shares (on top of TrainingConfig's defaults).
STUDY = {
    "context_length": 64,
    "prediction_length": 16,
    "min_past": 32,
    "n_tokens": 1024,
    "max_steps": 400,
    "save_steps": 100_000,
    "log_steps": 20,
    "per_device_train_batch_size": 32,
    "learning_rate": 1e-3,
    "shuffle_buffer_length": 1000,
    "mixed_precision": True,  # bfloat16 compute: 1.3-1.5x faster steps on CPU, the same for all
}
QUICK = {
    "context_length": 32,
    "prediction_length": 8,
    "min_past": 16,
    "n_tokens": 256,
    "max_steps": 3,
    "log_steps": 1,
    "per_device_train_batch_size": 8,
}
D_FF = 1024  # the tiny preset's feed-forward width

VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {},
    "series-moe": {"use_moe": True, "num_experts": 4, "num_active_experts": 2},
    "series-control": {
        "use_moe": True,
        "num_experts": 1,
        "num_active_experts": 1,
        "expert_hidden_dim": 2 * D_FF,
    },
    "token-moe": {
        "use_moe": True,
        "moe_level": "token",
        "num_experts": 8,
        "num_active_experts": 2,
        "expert_hidden_dim": D_FF // 4,
    },
    "token-control": {
        "use_moe": True,
        "moe_level": "token",
        "num_experts": 1,
        "num_active_experts": 1,
        "expert_hidden_dim": 2 * (D_FF // 4),
    },
}
CONTROL_OF = {"series-moe": "series-control", "token-moe": "token-control"}
# The horizon of a real dataset read from files, by frequency (as real_data.py sets them).
HORIZON_BY_FREQ = {"Y": 6, "Q": 8, "M": 12, "W": 13}


@dataclasses.dataclass
class EvalSet:
    """Datasets scored with one horizon: `name -> series`, and their seasonalities."""

    prediction_length: int
    series: dict[str, list[np.ndarray]]
    seasonality: dict[str, int]


def make_training_data(directory: Path, quick: bool) -> list[Path]:
    """`tsmixup.arrow` (mixes of demo and KernelSynth series) and `kernelsynth.arrow`."""
    from chronos_moe.data import generate_sample_series, kernel_synth, tsmixup, write_arrow

    directory.mkdir(parents=True, exist_ok=True)
    n_base, n_mix, n_ks, length = (20, 40, 20, 128) if quick else (600, 6000, 1500, 512)
    pool = generate_sample_series(n_base, length, seed=1) + kernel_synth(n_base, length, seed=2)
    mixes = tsmixup(pool, n_mix, min_length=length // 4, max_length=length, seed=3)
    paths = [directory / "tsmixup.arrow", directory / "kernelsynth.arrow"]
    write_arrow(mixes, paths[0])
    write_arrow(kernel_synth(n_ks, length, seed=4), paths[1])
    return paths


def synthetic_test_set(prediction_length: int, quick: bool) -> EvalSet:
    """Demo and KernelSynth series drawn with seeds no training file uses."""
    from chronos_moe.data import generate_sample_series, kernel_synth

    n, length = (8, 64) if quick else (200, 256)
    series = {
        "synthetic_demo": generate_sample_series(n, length, seed=1001),
        "synthetic_kernelsynth": kernel_synth(n, length, seed=1002),
    }
    return EvalSet(prediction_length, series, {"synthetic_demo": 24, "synthetic_kernelsynth": 1})


def real_test_sets(real_data: Path | None, wheel_dir: Path | None) -> list[EvalSet]:
    """The real-data benchmark grouped by horizon: from Arrow files in `real_data`
    (horizon by frequency) or assembled by `benchmarks/real_data.py`."""
    from chronos_moe.evaluation import seasonality_from_freq
    from chronos_moe.evaluation.datasets import as_datasets

    if real_data is not None:
        files = sorted(real_data.glob("*.arrow"))
        if not files:
            raise FileNotFoundError(
                f"`--real-data` must hold .arrow files. Found none in {real_data}"
            )
        loaded = [
            (d.name, d.series, d.freq, HORIZON_BY_FREQ.get((d.freq or "").upper()[:1]))
            for d in as_datasets([str(f) for f in files])
        ]
    else:
        module = _load_sibling("real_data")
        loaded = [
            (d.name, d.series, d.freq, d.prediction_length)
            for d in module.load_real_benchmark(wheel_dir)
        ]
    groups: dict[int, EvalSet] = {}
    for name, series, freq, horizon in loaded:
        if horizon is None:
            raise ValueError(
                f"The frequency of real dataset {name!r} must be one of {sorted(HORIZON_BY_FREQ)} "
                f"(it sets the horizon). Received: freq={freq!r}"
            )
        group = groups.setdefault(horizon, EvalSet(horizon, {}, {}))
        group.series[name] = series
        group.seasonality[name] = seasonality_from_freq(freq)
    return [groups[h] for h in sorted(groups)]


def _load_sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parameter_counts(model) -> dict[str, int]:
    """Total trainable parameters and those a token (or series) uses: a routed
    expert's weights count `top_k / num_experts` of their size."""
    total = active = 0
    num_experts = getattr(model, "num_experts", 1)
    top_k = getattr(model, "top_k", 1)
    for weight in model.trainable_weights:
        size = int(np.prod(weight.shape))
        total += size
        routed = len(weight.shape) == 3 and weight.shape[0] == num_experts and num_experts > 1
        routed = routed and ("/experts/" in weight.path or "feed_forward/w" in weight.path)
        active += size * top_k // num_experts if routed else size
    return {"total": total, "active": active}


def score(pipeline, eval_sets: list[EvalSet], seed: int, num_samples: int) -> dict[str, dict]:
    """Per dataset: the model's and Seasonal Naive's WQL and MASE."""
    from chronos_moe.evaluation import evaluate

    scores = {}
    for eval_set in eval_sets:
        result = evaluate(
            pipeline,
            eval_set.series,
            eval_set.prediction_length,
            seasonality=eval_set.seasonality,
            num_samples=num_samples,
            seed=seed,
            verbose=0,
        )
        for dataset in result.datasets:
            scores[dataset.name] = {
                "prediction_length": eval_set.prediction_length,
                "num_series": dataset.num_series,
                **{
                    f"{method}_{metric}": dataset.scores[method][metric]
                    for method in ("model", "seasonal_naive", "naive")
                    for metric in ("wql", "mase")
                },
            }
    return scores


def run_one(
    variant: str,
    seed: int,
    base: dict[str, Any],
    train_paths: list[Path],
    evaluation: dict[str, list[EvalSet]],
    output: Path,
    num_samples: int,
) -> dict[str, Any]:
    from chronos_moe.pipeline import ChronosPipeline
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import train

    config = TrainingConfig(
        **base,
        **VARIANTS[variant],
        training_data_paths=[str(p) for p in train_paths],
        probability=[0.9, 0.1],
        seed=seed,
        output_dir=str(output / "models" / f"{variant}-seed{seed}"),
    )
    started = time.perf_counter()
    result = train(config, overwrite=True, verbose=False)
    train_seconds = time.perf_counter() - started
    pipeline = ChronosPipeline(result.model)
    record = {
        "variant": variant,
        "seed": seed,
        "steps": config.max_steps,
        "parameters": parameter_counts(result.model),
        "final_ce": result.log[-1]["ce_loss"],
        "final_lb": result.log[-1].get("lb_loss", 0.0),
        "train_seconds": train_seconds,
        "scores": {
            part: score(pipeline, sets, seed, num_samples) for part, sets in evaluation.items()
        },
    }
    if config.use_moe and seed == min(SEEDS_IN_USE) and VARIANTS[variant]["num_experts"] > 1:
        from chronos_moe.evaluation import analyze_routing, write_routing_report

        routed = {
            name: series
            for sets in evaluation.values()
            for eval_set in sets
            for name, series in eval_set.series.items()
        }
        analysis = analyze_routing(pipeline, routed)
        write_routing_report(
            analysis, output / "experts" / variant, title=f"Expert analysis: {variant}, seed {seed}"
        )
        record["utilization"] = np.asarray(analysis.utilization).tolist()
    return record


SEEDS_IN_USE: list[int] = [0]


def aggregate(record: dict[str, Any], part: str, metric: str) -> float:
    """Geometric mean over a part's datasets of model / Seasonal Naive."""
    from chronos_moe.evaluation.metrics import aggregate_relative_score

    scores = record["scores"][part]
    return aggregate_relative_score(
        {name: s[f"model_{metric}"] for name, s in scores.items()},
        {name: s[f"seasonal_naive_{metric}"] for name, s in scores.items()},
    )


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and part: mean and standard deviation over seeds of the
    aggregated relative WQL and MASE."""
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        runs = [r for r in records if r["variant"] == variant]
        if not runs:
            continue
        entry = {"seeds": [r["seed"] for r in runs], "parameters": runs[0]["parameters"]}
        for part in runs[0]["scores"]:
            for metric in ("wql", "mase"):
                values = np.array([aggregate(r, part, metric) for r in runs])
                entry[f"{part}_{metric}"] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "values": values.tolist(),
                }
        entry["final_ce"] = float(np.mean([r["final_ce"] for r in runs]))
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
        summary[variant] = entry
    return summary


def verdicts(summary: dict[str, Any]) -> list[str]:
    """The two targets of the study, met or missed, in words."""
    lines = []
    dense = summary.get("dense")
    moes = [v for v in ("series-moe", "token-moe") if v in summary]
    if dense and moes:
        part = "synthetic"
        for part in ("synthetic", "real"):
            d = dense[f"{part}_wql"]
            best = min(moes, key=lambda v: summary[v][f"{part}_wql"]["mean"])
            m = summary[best][f"{part}_wql"]
            ratio = m["mean"] / d["mean"]
            beyond = m["mean"] + m["std"] < d["mean"] - d["std"]
            met = ratio <= 0.97 and beyond
            lines.append(
                f"- {part}: best MoE `{best}` relative WQL {m['mean']:.3f} ± {m['std']:.3f} vs "
                f"dense {d['mean']:.3f} ± {d['std']:.3f}: ratio **{ratio:.3f}** "
                f"(target ≤ 0.97 beyond the seed spread: **{'met' if met else 'missed'}**)"
            )
            control = summary.get(CONTROL_OF[best])
            if control:
                c = control[f"{part}_wql"]
                lines.append(
                    f"  - against its unrouted control `{CONTROL_OF[best]}` "
                    f"({c['mean']:.3f} ± {c['std']:.3f}): ratio {m['mean'] / c['mean']:.3f}"
                )
    best_real = min(summary, key=lambda v: summary[v]["real_wql"]["mean"], default=None)
    if best_real:
        value = summary[best_real]["real_wql"]["mean"]
        lines.append(
            f"- real data: the best model `{best_real}` scores relative WQL {value:.3f} "
            f"(target < 1, i.e. better than Seasonal Naive: **{'met' if value < 1 else 'missed'}**)"
        )
    return lines


def write_report(output: Path, records: list[dict[str, Any]], base: dict[str, Any]) -> Path:
    summary = summarise(records)
    (output / "results.json").write_text(
        json.dumps({"summary": summary, "runs": records}, indent=1)
    )
    header = (
        "| variant | total params | active params | synthetic rel. WQL | synthetic rel. MASE "
        "| real rel. WQL | real rel. MASE | final CE | train s |"
    )
    rows = [header, "|" + "---|" * 9]
    for variant, entry in summary.items():
        cells = [
            f"{entry[key]['mean']:.3f} ± {entry[key]['std']:.3f}"
            for key in ("synthetic_wql", "synthetic_mase", "real_wql", "real_mase")
        ]
        total, active = (entry["parameters"][key] / 1e6 for key in ("total", "active"))
        rows.append(
            f"| {variant} | {total:.2f} M | {active:.2f} M | "
            + " | ".join(cells)
            + f" | {entry['final_ce']:.3f} | {entry['train_seconds']:.0f} |"
        )
    per_dataset = _per_dataset_table(records)
    text = "\n".join(
        [
            "# Quality study: dense vs Mixture-of-Experts",
            "",
            f"Seeds per variant: {sorted({r['seed'] for r in records})}; training: "
            + ", ".join(f"{k}={v}" for k, v in base.items() if k != "save_steps")
            + ". Scores are aggregated relative to Seasonal Naive (geometric mean over "
            "datasets; < 1 is better than Seasonal Naive), mean ± std over seeds.",
            "",
            *rows,
            "",
            "## Verdicts",
            "",
            *verdicts(summary),
            "",
            "## Per dataset (relative WQL, mean over seeds)",
            "",
            per_dataset,
            "",
        ]
    )
    _plot(summary, output / "relative_wql.png")
    path = output / "report.md"
    path.write_text(text)
    return path


def _per_dataset_table(records: list[dict[str, Any]]) -> str:
    names = [(part, name) for part, scores in records[0]["scores"].items() for name in scores]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    rows = [
        "| dataset | h | " + " | ".join(variants) + " | Naive |",
        "|" + "---|" * (len(variants) + 3),
    ]
    for part, name in names:
        cells = []
        for variant in variants:
            ratios = [
                r["scores"][part][name]["model_wql"] / r["scores"][part][name]["seasonal_naive_wql"]
                for r in records
                if r["variant"] == variant
            ]
            cells.append(f"{np.mean(ratios):.3f}")
        first = records[0]["scores"][part][name]
        naive = first["naive_wql"] / first["seasonal_naive_wql"]
        rows.append(
            f"| {name} | {first['prediction_length']} | " + " | ".join(cells) + f" | {naive:.3f} |"
        )
    return "\n".join(rows)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(summary)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.9), layout="constrained")
    for axis, part in zip(axes, ("synthetic", "real"), strict=True):
        for i, variant in enumerate(variants):
            values = summary[variant][f"{part}_wql"]["values"]
            axis.bar(i, np.mean(values), color="#4C72B0" if "moe" in variant else "#999999")
            axis.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        axis.axhline(1.0, color="#C44E52", linewidth=1, linestyle="--", label="Seasonal Naive")
        axis.set_xticks(range(len(variants)), variants, rotation=20)
        axis.set_title(f"{part} series: relative WQL (lower is better)")
    # One legend below both panels: inside an axis it would cover a bar.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 steps: the pipeline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, help="training steps (default 400; --quick 3)")
    parser.add_argument("--num-samples", type=int, default=20, help="forecast samples per series")
    parser.add_argument("--real-data", type=Path, help="a directory of real-data .arrow files")
    parser.add_argument("--wheel-dir", type=Path, help="where real_data.py keeps its wheels")
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error(f"--seeds needs at least 2 seeds for a spread. Received: {args.seeds}")
    os.environ.setdefault("KERAS_BACKEND", args.backend)

    base = dict(STUDY, **(QUICK if args.quick else {}))
    if args.steps:
        base["max_steps"] = args.steps
    SEEDS_IN_USE[:] = args.seeds
    output = args.output_dir
    (output / "runs").mkdir(parents=True, exist_ok=True)
    # Everything is read before any training starts: bad data fails in seconds.
    evaluation = {
        "synthetic": [synthetic_test_set(base["prediction_length"], args.quick)],
        "real": real_test_sets(args.real_data, args.wheel_dir),
    }
    longest = max(s.prediction_length for sets in evaluation.values() for s in sets)
    if longest > base["prediction_length"]:
        raise ValueError(
            f"Every horizon must fit the models' prediction_length {base['prediction_length']}. "
            f"Received: a horizon of {longest}"
        )
    train_paths = make_training_data(output / "data", args.quick)
    records = []
    for seed in args.seeds:  # seed-major: an interrupted study has whole seeds
        for variant in args.variants:
            path = output / "runs" / f"{variant}-seed{seed}.json"
            if path.exists():
                records.append(json.loads(path.read_text()))
                continue
            print(f"== {variant}, seed {seed}: {base['max_steps']} steps ==", flush=True)
            record = run_one(variant, seed, base, train_paths, evaluation, output, args.num_samples)
            path.write_text(json.dumps(record, indent=1))
            records.append(record)
            print(
                f"   real rel. WQL {aggregate(record, 'real', 'wql'):.3f}, synthetic "
                f"{aggregate(record, 'synthetic', 'wql'):.3f}, {record['train_seconds']:.0f} s",
                flush=True,
            )
    report = write_report(output, records, base)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
