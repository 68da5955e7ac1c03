"""The `chronos-moe` command line: train, compare, generate-data, evaluate,
analyze-experts.

The backend (`--backend`) is set before Keras is imported, so every
sub-command imports the library inside its handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("torch", "jax"),
        help="Keras backend (default: $KERAS_BACKEND, else torch if installed, else jax)",
    )


def _train(args: argparse.Namespace) -> int:
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import train

    config = TrainingConfig.from_yaml(args.config)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    print(f"Final model: {result.final_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from chronos_moe.training.compare import compare
    from chronos_moe.training.config import TrainingConfig

    dense = TrainingConfig.from_yaml(args.dense_config) if args.dense_config else None
    moe = TrainingConfig.from_yaml(args.moe_config) if args.moe_config else None
    report = compare(args.output_dir, dense, moe, quick=args.quick, overwrite=args.overwrite)
    print(f"Report: {report}")
    return 0


def _generate_data(args: argparse.Namespace) -> int:
    from chronos_moe.data import generate_sample_series, kernel_synth, tsmixup, write_arrow

    if args.kind == "sample":
        series = generate_sample_series(args.num_series, args.length, seed=args.seed)
    elif args.kind == "kernel-synth":
        series = kernel_synth(args.num_series, length=args.length, seed=args.seed)
    else:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronos-moe",
        description="Chronos T5 forecasting models with Mixture-of-Experts, in Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a dense or MoE model from a YAML config")
    train.add_argument("--config", required=True, type=Path, help="YAML training config")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
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
    _add_backend(compare)
    compare.set_defaults(handler=_compare)

    generate = commands.add_parser("generate-data", help="write synthetic series to an Arrow file")
    generate.add_argument("--kind", choices=("sample", "kernel-synth", "tsmixup"), default="sample")
    generate.add_argument("--num-series", type=int, default=50)
    generate.add_argument("--length", type=int, default=150)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--output", type=Path, required=True)
    generate.set_defaults(handler=_generate_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `chronos-moe` command."""
    args = build_parser().parse_args(argv)
    if getattr(args, "backend", None):
        os.environ["KERAS_BACKEND"] = args.backend
    from chronos_moe.data import DataError
    from chronos_moe.training.config import ConfigError
    from chronos_moe.training.run import RunError

    try:
        return args.handler(args)
    except (ConfigError, DataError, RunError) as error:
        print(f"chronos-moe {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
