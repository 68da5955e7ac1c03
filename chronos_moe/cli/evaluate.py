"""`chronos-moe evaluate`: WQL and MASE of a model and the Naive baselines on Arrow files."""

from __future__ import annotations

import argparse
from pathlib import Path

from chronos_moe.cli.arguments import POSITIVE, SEED, add_backend, add_command, check_files


def add_parser(commands) -> None:
    """Adds `evaluate` to the sub-commands `commands`."""
    evaluate = add_command(
        commands,
        "evaluate",
        "WQL and MASE of a model and the Naive baselines on Arrow files",
        "Forecasts the last --prediction-length points of every series of each Arrow file "
        "and scores the forecasts (weighted quantile loss, mean absolute scaled error) "
        "against the Naive and Seasonal Naive baselines, as the Chronos benchmark does. "
        "Prints a table and writes it as CSV.",
        "chronos-moe evaluate --model output/my-moe/final --data test.arrow --prediction-length 24",
    )
    evaluate.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="checkpoint dir or hub id (or naive, seasonal_naive)",
    )
    evaluate.add_argument(
        "--data", required=True, nargs="+", type=Path, metavar="ARROW", help="Arrow files"
    )
    evaluate.add_argument(
        "--prediction-length",
        required=True,
        type=POSITIVE,
        metavar="N",
        help="points to forecast at the end of each series",
    )
    evaluate.add_argument(
        "--seasonality",
        type=POSITIVE,
        metavar="N",
        help="MASE seasonality (default: from each file's freq)",
    )
    evaluate.add_argument(
        "--output",
        type=Path,
        default=Path("evaluation.csv"),
        metavar="CSV",
        help="where the scores are written",
    )
    evaluate.add_argument(
        "--batch-size", type=POSITIVE, default=256, metavar="N", help="series per forecast call"
    )
    evaluate.add_argument(
        "--num-samples",
        type=POSITIVE,
        metavar="N",
        help="sample paths per forecast (default: the model's)",
    )
    evaluate.add_argument("--seed", type=SEED, default=0, help="random seed of the sampling")
    add_backend(evaluate)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_files("--data", args.data)
    if args.output.is_dir():  # (a missing directory is created)
        raise ValueError(
            f"argument --output: {args.output} is a directory. Received: --output {args.output}"
        )
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
