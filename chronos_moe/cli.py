"""The `chronos-moe` command line: train, compare, generate-data, evaluate,
analyze-experts.

The backend (`--backend`, else a config's `backend` key, else
`$KERAS_BACKEND`) is set before Keras is imported, so every sub-command imports
the library inside its handler.

Example (the whole demo: train dense and MoE on generated data, write a report):

    chronos-moe compare --quick --output-dir compare-output
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("torch", "jax"),
        help="Keras backend (default: the config's `backend`, else $KERAS_BACKEND, else torch "
        "if installed, else jax)",
    )


def _load_config(path: Path, args: argparse.Namespace):
    """Reads a YAML config; `--backend` overrides its `backend`, which otherwise
    chooses the backend when Keras is not imported yet."""
    from chronos_moe.training.config import TrainingConfig

    config = TrainingConfig.from_yaml(path)
    if args.backend:
        return config.replace(backend=args.backend)
    if config.backend and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = config.backend
    return config


def _train(args: argparse.Namespace) -> int:
    config = _load_config(args.config, args)  # a bad config exits here: nothing created
    if args.resume_from and (args.resume or args.overwrite):
        raise ValueError("--resume-from names the checkpoint to resume; drop --resume/--overwrite")
    from chronos_moe.training.lock import OutputLock

    # The lock before Keras is imported: a second run on this directory exits at once.
    with OutputLock(config.output_dir):
        from chronos_moe.training.run import TrainingStopped, train

        try:
            result = train(
                config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from
            )
        except TrainingStopped as stopped:  # SIGTERM: a clean stop, exit status 0
            print(f"chronos-moe train: {stopped}", file=sys.stderr)
            return 0
    print(f"Final model: {result.final_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    dense = _load_config(args.dense_config, args) if args.dense_config else None
    moe = _load_config(args.moe_config, args) if args.moe_config else None
    from chronos_moe.training.compare import compare
    from chronos_moe.training.run import TrainingStopped

    try:
        report = compare(
            args.output_dir,
            dense,
            moe,
            quick=args.quick,
            overwrite=args.overwrite,
            num_samples=args.num_samples,
        )
    except TrainingStopped as stopped:  # SIGTERM: no report; compare cannot resume
        print(
            f"chronos-moe compare: stopped by SIGTERM after step {stopped.step} of the run in "
            f"{stopped.checkpoint.parent.parent if stopped.checkpoint else args.output_dir}; "
            "no report was written. Run compare again with --overwrite to start over.",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    print(f"Report: {report}")
    return 0


def _generate_data(args: argparse.Namespace) -> int:
    # From the submodules, not `chronos_moe.data`: generating data never imports Keras.
    from chronos_moe.data.arrow import read_arrow, write_arrow
    from chronos_moe.data.mixup import tsmixup
    from chronos_moe.data.synthetic import generate_sample_series, kernel_synth

    if args.input and args.kind != "tsmixup":
        raise ValueError(
            "--input is read by --kind tsmixup only (the series to mix). "
            f"Received: --kind {args.kind} --input {' '.join(map(str, args.input))}"
        )
    if args.kind == "sample":
        series = generate_sample_series(args.num_series, args.length, seed=args.seed)
    elif args.kind == "kernel-synth":
        series = kernel_synth(args.num_series, length=args.length, seed=args.seed)
    else:
        if args.input:
            source = [values for path in args.input for values in read_arrow(path)]
        else:  # mix generated demo series
            source = generate_sample_series(max(args.num_series, 10), args.length, seed=args.seed)
        series = tsmixup(
            source,
            args.num_series,
            min_length=min(64, args.length),
            max_length=args.length,
            seed=args.seed,
        )
    write_arrow(series, args.output)
    print(f"Wrote {len(series)} series to {args.output}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from chronos_moe.evaluation import run_evaluate

    run_evaluate(
        args.model,
        args.data,
        args.prediction_length,
        seasonality=args.seasonality,
        output_csv=args.output,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    return 0


def _analyze_experts(args: argparse.Namespace) -> int:
    from chronos_moe.evaluation import run_analyze_experts

    run_analyze_experts(
        args.model,
        args.data,
        args.output_dir,
        batch_size=args.batch_size,
        examples_per_expert=args.examples_per_expert,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="chronos-moe",
        description="Chronos T5 forecasting models with Mixture-of-Experts, in Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a dense or MoE model from a YAML config")
    train.add_argument("--config", required=True, type=Path, help="YAML training config")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint that verifies (newer broken ones are named)",
    )
    train.add_argument(
        "--resume-from",
        type=Path,
        metavar="PATH",
        help="continue from this checkpoint (.../checkpoints/step-N) or fail; no fall-back",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an output directory of another run"
    )
    _add_backend(train)
    train.set_defaults(handler=_train)

    compare = commands.add_parser(
        "compare", help="train dense and MoE on the same data and write a report"
    )
    compare.add_argument("--dense-config", type=Path, help="dense config (default: sample)")
    compare.add_argument("--moe-config", type=Path, help="MoE config (default: sample)")
    compare.add_argument("--output-dir", type=Path, default=Path("compare-output"))
    compare.add_argument("--quick", action="store_true", help="small, few-minute version")
    compare.add_argument("--overwrite", action="store_true", help="replace earlier results")
    compare.add_argument(
        "--num-samples", type=int, help="sample paths per forecast (default: the model's)"
    )
    _add_backend(compare)
    compare.set_defaults(handler=_compare)

    generate = commands.add_parser("generate-data", help="write synthetic series to an Arrow file")
    generate.add_argument("--kind", choices=("sample", "kernel-synth", "tsmixup"), default="sample")
    generate.add_argument("--num-series", type=int, default=50)
    generate.add_argument("--length", type=int, default=150, help="(maximum) series length")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--input", type=Path, nargs="+", help="tsmixup: Arrow files to mix (default: demo series)"
    )
    generate.add_argument("--output", type=Path, required=True)
    generate.set_defaults(handler=_generate_data)

    evaluate = commands.add_parser(
        "evaluate", help="WQL and MASE of a model and the Naive baselines on Arrow files"
    )
    evaluate.add_argument(
        "--model", required=True, help="checkpoint dir or hub id (or naive, seasonal_naive)"
    )
    evaluate.add_argument("--data", required=True, nargs="+", type=Path, help="Arrow files")
    evaluate.add_argument("--prediction-length", required=True, type=int)
    evaluate.add_argument(
        "--seasonality", type=int, help="MASE seasonality (default: from each file's freq)"
    )
    evaluate.add_argument("--output", type=Path, default=Path("evaluation.csv"), help="CSV path")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--num-samples", type=int, help="default: the model's")
    evaluate.add_argument("--seed", type=int, default=0)
    _add_backend(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    analyze = commands.add_parser(
        "analyze-experts", help="routing report of a MoE model on Arrow files"
    )
    analyze.add_argument("--model", required=True, help="MoE checkpoint dir")
    analyze.add_argument("--data", required=True, nargs="+", type=Path, help="Arrow files")
    analyze.add_argument("--output-dir", type=Path, default=Path("expert-analysis"))
    analyze.add_argument("--batch-size", type=int, default=256)
    analyze.add_argument("--examples-per-expert", type=int, default=3)
    _add_backend(analyze)
    analyze.set_defaults(handler=_analyze_experts)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `chronos-moe` command.

    Bad input (configs, data, arguments, an occupied output directory) ends with
    a one-line `chronos-moe <command>: error: ...` on stderr and exit status 2.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "backend", None):
        os.environ["KERAS_BACKEND"] = args.backend
    try:
        return args.handler(args)
    except (ValueError, OSError, FloatingPointError) as error:
        return _report(args, error)
    except RuntimeError as error:
        from chronos_moe.training.lock import RunError

        if not isinstance(error, RunError):
            raise
        return _report(args, error)


def _report(args: argparse.Namespace, error: Exception) -> int:
    print(f"chronos-moe {args.command}: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
