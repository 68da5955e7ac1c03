"""`chronos-moe forecast`: forecasts every series of a CSV, Parquet or Arrow file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chronos_moe.cli.arguments import (
    POSITIVE,
    SEED,
    add_backend,
    add_command,
    check_files,
    check_model,
    check_output_file,
    check_suffix,
    quantile_level,
)


def add_parser(commands) -> None:
    """Adds `forecast` to the sub-commands `commands`."""
    forecast = add_command(
        commands,
        "forecast",
        "forecast every series of a CSV, Parquet or Arrow file",
        "Forecasts the next --prediction-length steps of every series in --data and writes "
        "them as CSV or Parquet: one row per series and step, with the columns of "
        "`ChronosPipeline.predict_df` (id, timestamp, target_name, predictions = the mean, "
        "one column per quantile level).\nThe data is long format (one row per observation: "
        "id, timestamp and target columns; unsorted rows, any id type) or the GluonTS layout "
        "(one row per series: `start` and a `target` list). The forecast timestamps continue "
        "each series by the frequency inferred from the data (or --freq).\nThe data is read "
        "and checked before the model is loaded; nothing is written on an error.",
        "chronos-moe forecast --model output/my-moe/final --data sales.csv "
        "--prediction-length 24 --output forecasts.csv",
    )
    _add_forecast_options(forecast)
    _add_column_options(forecast)
    _add_sampling_options(forecast)
    add_backend(forecast)
    forecast.set_defaults(handler=run)


def _add_forecast_options(forecast: argparse.ArgumentParser) -> None:
    """The model, the data, what to forecast and where it goes."""
    from chronos_moe.config import DEFAULT_QUANTILE_LEVELS

    forecast.add_argument("--model", required=True, metavar="DIR", help="checkpoint dir or hub id")
    forecast.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="FILE",
        help="the series: .csv, .parquet or .arrow, long format or the GluonTS layout",
    )
    forecast.add_argument(
        "--prediction-length",
        required=True,
        type=POSITIVE,
        metavar="N",
        help="steps to forecast after the end of each series",
    )
    forecast.add_argument(
        "--quantile-levels",
        type=quantile_level,
        nargs="+",
        default=list(DEFAULT_QUANTILE_LEVELS),
        metavar="Q",
        help="quantile levels in (0, 1), one output column each (default: 0.1 0.2 ... 0.9)",
    )
    forecast.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="where the forecasts go: .csv or .parquet",
    )
    forecast.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )


def _add_column_options(forecast: argparse.ArgumentParser) -> None:
    """The columns of the data and its frequency."""
    forecast.add_argument(
        "--id-column", default="item_id", metavar="NAME", help="the series id column"
    )
    forecast.add_argument(
        "--timestamp-column", default="timestamp", metavar="NAME", help="the time column"
    )
    forecast.add_argument(
        "--target", default="target", metavar="NAME", help="the column to forecast"
    )
    forecast.add_argument(
        "--freq",
        metavar="FREQ",
        help="pandas frequency of the series such as h, D, W-SUN (default: inferred from the "
        "timestamps, or an Arrow file's freq metadata)",
    )


def _add_sampling_options(forecast: argparse.ArgumentParser) -> None:
    forecast.add_argument(
        "--num-samples",
        type=POSITIVE,
        metavar="N",
        help="sample paths per forecast (default: the model's)",
    )
    forecast.add_argument("--seed", type=SEED, default=0, help="random seed of the sampling")
    forecast.add_argument(
        "--batch-size", type=POSITIVE, default=256, metavar="N", help="series per forecast call"
    )


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    # The data is read and checked before the model is loaded.
    from chronos_moe.data.errors import DataError
    from chronos_moe.data.long_frame import LongFrameSeries
    from chronos_moe.data.table_file import read_long_frame, write_frame

    columns = {
        "id_column": args.id_column,
        "timestamp_column": args.timestamp_column,
        "target": args.target,
    }
    frame = read_long_frame(args.data, freq=args.freq, **columns)
    try:
        series = LongFrameSeries.from_frame(frame, **columns)
        series.future_timestamps(args.prediction_length, args.freq)
    except DataError as error:  # named by the file rather than "<DataFrame>"
        raise DataError(error.message, args.data, error.row, error.field) from None
    except ValueError as error:  # a --freq pandas does not know
        raise ValueError(f"argument --freq: {error}") from None
    from chronos_moe.pipeline import ChronosPipeline

    pipeline = ChronosPipeline.from_pretrained(args.model)
    forecast = pipeline.predict_df(
        frame,
        prediction_length=args.prediction_length,
        quantile_levels=args.quantile_levels,
        batch_size=args.batch_size,
        freq=args.freq,
        verbose=1 if sys.stdout.isatty() else 0,
        num_samples=args.num_samples,
        seed=args.seed,
        **columns,
    )
    write_frame(forecast, args.output)
    print(
        f"Wrote {args.prediction_length} forecast steps for each of {len(series)} series to "
        f"{args.output}"
    )
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """The files and the model, before anything is read or loaded."""
    from chronos_moe.data.table_file import READ_SUFFIXES, WRITE_SUFFIXES

    check_files("--data", [args.data])
    check_suffix("--data", args.data, READ_SUFFIXES)
    check_output_file("--output", args.output)
    check_suffix("--output", args.output, WRITE_SUFFIXES)
    if args.output.exists() and not args.overwrite:
        raise ValueError(
            f"argument --output: {args.output} exists; pass --overwrite to replace it. "
            f"Received: --output {args.output}"
        )
    check_model("--model", args.model)
