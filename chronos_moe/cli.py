"""The `chronos-moe` command line: train, compare, tune, generate-data, evaluate,
forecast, analyze-experts, init-config.

The backend (`--backend`, else a config's `backend` key, else
`$KERAS_BACKEND`) is set before Keras is imported, so every sub-command imports
the library inside its handler.

Example (the whole demo: train dense and MoE on generated data, write a report):

    chronos-moe compare --quick --output-dir compare-output
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import textwrap
import warnings
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


# `init-config` kinds -> the bundled sample configs (chronos_moe/configs).
INIT_CONFIGS = {
    "dense": "chronos-t5-tiny-sample.yaml",
    "moe": "chronos-t5-tiny-moe-sample.yaml",
    "token-moe": "chronos-t5-tiny-token-moe-sample.yaml",
}


def _check_files(option: str, paths: list[Path] | None) -> None:
    """Each of `paths` is an existing file; checked before any heavy work."""
    for path in paths or ():
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise ValueError(f"argument {option}: {path} {problem}. Received: {option} {path}")


def _check_output_file(option: str, path: Path) -> None:
    """`path` can be written: its directory exists and it is not a directory."""
    if path.is_dir():
        raise ValueError(f"argument {option}: {path} is a directory. Received: {option} {path}")
    if not path.parent.is_dir():
        raise ValueError(
            f"argument {option}: the directory {path.parent} does not exist. "
            f"Received: {option} {path}"
        )


def _train(args: argparse.Namespace) -> int:
    config = _load_config(args.config, args)  # a bad config exits here: nothing created
    if args.resume_from and (args.resume or args.overwrite):
        raise ValueError("--resume-from names the checkpoint to resume; drop --resume/--overwrite")
    if args.resume_from and not args.resume_from.is_dir():
        raise ValueError(
            f"argument --resume-from: {args.resume_from} is not a checkpoint directory "
            f"(.../checkpoints/step-N). Received: --resume-from {args.resume_from}"
        )
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
            max_steps=args.max_steps,
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


def _tune(args: argparse.Namespace) -> int:
    config = _load_config(args.config, args)  # a bad config exits here: nothing created
    # The search space, the base run's data and the output directory are checked
    # before Optuna or Keras is imported.
    from chronos_moe.tuning.search_space import SearchSpace

    space = SearchSpace.from_yaml(args.search_space) if args.search_space else None
    space = space or SearchSpace.default(config)
    from chronos_moe.tuning.study import check_output_dir, check_tune_inputs

    check_tune_inputs(config, space, args.trials)
    check_output_dir(args.output_dir)
    from chronos_moe.tuning.optuna_import import MissingTuneExtra, import_optuna

    try:
        import_optuna()
    except MissingTuneExtra as error:
        raise ValueError(str(error)) from None
    from chronos_moe.tuning.study import tune

    result = tune(
        config,
        args.output_dir,
        args.trials,
        space=space,
        timeout=args.timeout,
        seed=args.seed,
        num_samples=args.num_samples,
    )
    return 0 if result.best_config is not None else 1


def _generate_data(args: argparse.Namespace) -> int:
    _check_output_file("--output", args.output)
    if args.input and args.kind != "tsmixup":
        raise ValueError(
            "--input is read by --kind tsmixup only (the series to mix). "
            f"Received: --kind {args.kind} --input {' '.join(map(str, args.input))}"
        )
    _check_files("--input", args.input)
    # From the submodules, not `chronos_moe.data`: generating data never imports Keras.
    from chronos_moe.data.arrow import read_arrow, write_arrow
    from chronos_moe.data.mixup import tsmixup
    from chronos_moe.data.synthetic import generate_sample_series, kernel_synth

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
    _check_files("--data", args.data)
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


def _check_model(option: str, model: str) -> None:
    """`model` is a checkpoint directory (with config.json) or looks like a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"argument {option}: {model} is not a checkpoint directory (it has no "
                f"config.json). Received: {option} {model}"
            )
        return
    if path.exists():
        raise ValueError(
            f"argument {option}: {model} is a file; expected a checkpoint directory. "
            f"Received: {option} {model}"
        )
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise ValueError(
            f"argument {option}: {model} does not exist; expected a checkpoint directory or a "
            f"hub id like amazon/chronos-t5-small. Received: {option} {model}"
        )


def _check_suffix(option: str, path: Path, formats: dict[str, str]) -> None:
    """`path` ends in one of the suffixes of `formats`."""
    if path.suffix.lower() not in formats:
        raise ValueError(
            f"argument {option}: expected a file ending in {', '.join(sorted(formats))}. "
            f"Received: {option} {path}"
        )


def _forecast(args: argparse.Namespace) -> int:
    from chronos_moe.data.table_file import READ_SUFFIXES, WRITE_SUFFIXES

    _check_files("--data", [args.data])
    _check_suffix("--data", args.data, READ_SUFFIXES)
    _check_output_file("--output", args.output)
    _check_suffix("--output", args.output, WRITE_SUFFIXES)
    if args.output.exists() and not args.overwrite:
        raise ValueError(
            f"argument --output: {args.output} exists; pass --overwrite to replace it. "
            f"Received: --output {args.output}"
        )
    _check_model("--model", args.model)
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


def _analyze_experts(args: argparse.Namespace) -> int:
    _check_files("--data", args.data)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise ValueError(
            f"argument --output-dir: {args.output_dir} is a file. "
            f"Received: --output-dir {args.output_dir}"
        )
    from chronos_moe.evaluation import run_analyze_experts

    run_analyze_experts(
        args.model,
        args.data,
        args.output_dir,
        batch_size=args.batch_size,
        examples_per_expert=args.examples_per_expert,
    )
    return 0


def _init_config(args: argparse.Namespace) -> int:
    from importlib import resources

    text = resources.files("chronos_moe.configs").joinpath(INIT_CONFIGS[args.kind]).read_text()
    sys.stdout.write(text)
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each line of a description on its own (indented lines, such as
    examples, stay as written), and ends each option's help with its default
    (`argparse.ArgumentDefaultsHelpFormatter` would also print `(default: None)`
    and `(default: False)`; options without a default say in their help what
    happens instead)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line[:1].isspace() or not line
            else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
            for line in text.splitlines()
        )

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings:  # a positional argument
            return text
        if action.required:
            return f"{text} (required)"
        no_default = action.default is None or action.default is False  # (`is`: 0 is a default)
        if no_default or action.default == argparse.SUPPRESS or "default:" in text:
            return text
        return f"{text} (default: %(default)s)"


def _int_type(low: int, high: int | None = None):
    """An argparse `type`: an integer in `[low, high]`. A value out of range
    ends the command at parse time (exit status 2) naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer. Received: {text!r}") from None
        if value < low or (high is not None and value > high):
            expected = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be an integer {expected}. Received: {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" if parse itself fails
    parse.expected = f">= {low}" if high is None else f"{low}–{high}"  # for the docs' table
    return parse


def _quantile_level(text: str) -> float:
    """An argparse `type`: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number. Received: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1 (exclusive). Received: {text}"
        )
    return value


_quantile_level.__name__ = "quantile level"
_quantile_level.expected = "in (0, 1)"

POSITIVE = _int_type(1)
SEED = _int_type(0, 2**32 - 1)  # numpy's seed range
EXAMPLES_PER_EXPERT = _int_type(1, 20)


def _add_command(commands, name: str, summary: str, description: str, example: str):
    """A sub-command with its one-line summary (in `chronos-moe --help`), a
    description and an example (in `chronos-moe NAME --help`)."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=_HelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from chronos_moe import __version__
    from chronos_moe.config import DEFAULT_QUANTILE_LEVELS

    parser = argparse.ArgumentParser(
        prog="chronos-moe",
        description="Chronos T5 forecasting models with Mixture-of-Experts, in Keras 3. "
        "`chronos-moe COMMAND --help` describes a command.",
        epilog="example:\n  chronos-moe compare --quick    # train dense and MoE, write a report",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _add_command(
        commands,
        "train",
        "train a dense or MoE model from a YAML config",
        "Trains a model as the YAML config says and writes checkpoints, logs and the final "
        "model into its `output_dir`.\nThe config, the output directory's lock and the data are "
        "checked before the model is built.\n`chronos-moe init-config moe` prints a config to "
        "start from.",
        "chronos-moe init-config moe > my-moe.yaml\n"
        "chronos-moe train --config my-moe.yaml\n"
        "chronos-moe train --config my-moe.yaml --resume    # after an interruption",
    )
    train.add_argument(
        "--config", required=True, type=Path, metavar="YAML", help="YAML training config"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint that verifies (newer broken ones are named)",
    )
    train.add_argument(
        "--resume-from",
        type=Path,
        metavar="PATH",
        help="continue from this checkpoint (.../checkpoints/step-N) or fail; no fall-back "
        "(default: none, start at step 0 unless --resume)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an output directory of another run"
    )
    _add_backend(train)
    train.set_defaults(handler=_train)

    compare = _add_command(
        commands,
        "compare",
        "train dense and MoE on the same data and write a report",
        "Trains a dense and a MoE model on the same data, seed and steps, evaluates both "
        "against the Naive baselines on held-out points, analyses the MoE routing, and "
        "writes report.md with its figures into --output-dir.\nWithout configs it uses the "
        "bundled sample configs on generated demo data.",
        "chronos-moe compare --quick --output-dir compare-output",
    )
    compare.add_argument(
        "--dense-config",
        type=Path,
        metavar="YAML",
        help="dense config (default: the MoE config with `use_moe: false`, else the sample)",
    )
    compare.add_argument(
        "--moe-config",
        type=Path,
        metavar="YAML",
        help="MoE config (default: the dense config with `use_moe: true`, else the sample)",
    )
    compare.add_argument(
        "--output-dir",
        type=Path,
        default=Path("compare-output"),
        metavar="DIR",
        help="where the report goes",
    )
    compare.add_argument(
        "--quick", action="store_true", help="small, few-minute version (100 steps each)"
    )
    compare.add_argument("--overwrite", action="store_true", help="replace earlier results")
    compare.add_argument(
        "--num-samples",
        type=POSITIVE,
        metavar="N",
        help="sample paths per forecast (default: the model's, 20)",
    )
    compare.add_argument(
        "--max-steps",
        type=POSITIVE,
        metavar="N",
        help="train each model N steps instead of the configs' (or --quick's) number, "
        "e.g. for a smoke test (default: the configs')",
    )
    _add_backend(compare)
    compare.set_defaults(handler=_compare)

    tune = _add_command(
        commands,
        "tune",
        "search experts, routing and learning rate with Optuna",
        "Runs an Optuna study over a base training config: each trial trains the config with "
        "sampled values (number of experts, top_k, balance weight and mode, router z-loss "
        "weight and hidden size, learning rate; or those of --search-space) for its "
        "`max_steps` and is scored by WQL on the config's `validation_data_paths`; the "
        "training CE lets a median pruner stop poor trials early.\nWrites into --output-dir "
        "the study (study.db: running the command again resumes it), trials/ (one training "
        "run per trial), best_config.yaml, trials.csv and the plots "
        "(optimization_history.png, param_importances.png).\nThe config, the search space "
        "(top_k <= num_experts in every trial) and the data files are checked before any "
        'model is built. Needs the tune extra: pip install "chronos-moe[tune]".',
        "chronos-moe tune --config my-moe.yaml --trials 20 --output-dir tuning\n"
        "chronos-moe tune --config my-moe.yaml --trials 30 --output-dir tuning   # resume, "
        "to 30 trials",
    )
    tune.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="YAML",
        help="base training config (with validation_data_paths); max_steps is each trial's",
    )
    tune.add_argument(
        "--trials",
        required=True,
        type=POSITIVE,
        metavar="N",
        help="completed or pruned trials the study should hold (a rerun adds the missing ones)",
    )
    tune.add_argument(
        "--output-dir", required=True, type=Path, metavar="DIR", help="the study's directory"
    )
    tune.add_argument(
        "--search-space",
        type=Path,
        metavar="YAML",
        help="config keys and ranges to sample (default: experts, top_k, balance weight and "
        "mode, z-loss weight, router hidden size, learning rate)",
    )
    tune.add_argument(
        "--timeout",
        type=POSITIVE,
        metavar="SECONDS",
        help="start no trial after this many seconds (default: no limit)",
    )
    tune.add_argument(
        "--seed",
        type=SEED,
        help="seed of the sampler (default: the config's `seed`); trial N trains with seed "
        "`seed` + N",
    )
    tune.add_argument(
        "--num-samples",
        type=POSITIVE,
        metavar="N",
        help="sample paths per forecast when scoring (default: the config's num_samples)",
    )
    _add_backend(tune)
    tune.set_defaults(handler=_tune)

    generate = _add_command(
        commands,
        "generate-data",
        "write synthetic series to an Arrow file",
        "Writes generated series to an Arrow file in the GluonTS/Chronos layout, for "
        "training or evaluation. Kinds:\n"
        "  sample        sums of seasonal patterns, trends and noise (the demo data)\n"
        "  kernel-synth  Gaussian-process samples from random kernel combinations "
        "(KernelSynth)\n"
        "  tsmixup       convex mixes of --input series (TSMixup)\n"
        "The same --seed gives the same file.",
        "chronos-moe generate-data --kind kernel-synth --num-series 1000 --length 1024 "
        "--output ks.arrow",
    )
    generate.add_argument(
        "--kind",
        choices=("sample", "kernel-synth", "tsmixup"),
        default="sample",
        help="generator",
    )
    generate.add_argument(
        "--num-series", type=POSITIVE, default=50, metavar="N", help="series to write"
    )
    generate.add_argument(
        "--length", type=POSITIVE, default=150, metavar="N", help="(maximum) series length"
    )
    generate.add_argument(
        "--seed", type=SEED, default=0, help="random seed; the same seed writes the same series"
    )
    generate.add_argument(
        "--input",
        type=Path,
        nargs="+",
        metavar="ARROW",
        help="tsmixup: Arrow files to mix (default: generated demo series)",
    )
    generate.add_argument(
        "--output", type=Path, required=True, metavar="ARROW", help="the Arrow file to write"
    )
    generate.set_defaults(handler=_generate_data)

    evaluate = _add_command(
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
    _add_backend(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    forecast = _add_command(
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
        type=_quantile_level,
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
    _add_backend(forecast)
    forecast.set_defaults(handler=_forecast)

    analyze = _add_command(
        commands,
        "analyze-experts",
        "routing report of a MoE model on Arrow files",
        "Routes every series of the Arrow files through a MoE model's router and writes a "
        "report into --output-dir: how evenly the experts are used, how confident the router "
        "is, what kind of series each expert attracts, and example series per expert "
        "(report.md, PNG figures, routing.csv).",
        "chronos-moe analyze-experts --model output/my-moe/final --data test.arrow "
        "--output-dir experts",
    )
    analyze.add_argument("--model", required=True, metavar="DIR", help="MoE checkpoint dir")
    analyze.add_argument(
        "--data", required=True, nargs="+", type=Path, metavar="ARROW", help="Arrow files"
    )
    analyze.add_argument(
        "--output-dir",
        type=Path,
        default=Path("expert-analysis"),
        metavar="DIR",
        help="where the report goes",
    )
    analyze.add_argument(
        "--batch-size", type=POSITIVE, default=256, metavar="N", help="series per routing call"
    )
    analyze.add_argument(
        "--examples-per-expert",
        type=EXAMPLES_PER_EXPERT,
        default=3,
        metavar="N",
        help="example series drawn for each expert, 1-20",
    )
    _add_backend(analyze)
    analyze.set_defaults(handler=_analyze_experts)

    init = _add_command(
        commands,
        "init-config",
        "print a sample training config (YAML) to start from",
        "Prints one of the bundled sample training configs (Chronos-T5 tiny, dense, with "
        "4 series-level experts, or with token-level experts) to stdout. Edit "
        "`training_data_paths` and `output_dir`; "
        "docs/configuration.md explains every key.",
        "chronos-moe init-config moe > my-moe.yaml",
    )
    init.add_argument(
        "kind",
        choices=tuple(INIT_CONFIGS),
        help="dense model, series- or token-level Mixture-of-Experts",
    )
    init.set_defaults(handler=_init_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `chronos-moe` command.

    Bad input (arguments, configs, data, an occupied output directory) ends with
    a one-line `chronos-moe <command>: error: ...` on stderr and exit status 2;
    arguments are checked before any model is built or file written. Warnings
    are printed as one line each, without Python source lines.
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the sub-command, with its usage, not by `chronos-moe`
            (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit:  # --help, --version (0) and bad arguments (2)
        return exit.code
    if getattr(args, "backend", None):
        os.environ["KERAS_BACKEND"] = args.backend
    show_warning = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, args.command)
    try:
        return args.handler(args)
    except (ValueError, OSError, FloatingPointError) as error:
        return _report(args, error)
    except RuntimeError as error:
        from chronos_moe.training.lock import RunError

        if not isinstance(error, RunError):
            raise
        return _report(args, error)
    finally:
        warnings.showwarning = show_warning


def _show_warning(command, message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 (warnings.showwarning's signature)
    """A warning as one line: `chronos-moe train: warning: ... (ExpertCollapseWarning)`."""
    print(f"chronos-moe {command}: warning: {message} ({category.__name__})", file=sys.stderr)


def _report(args: argparse.Namespace, error: Exception) -> int:
    print(f"chronos-moe {args.command}: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
