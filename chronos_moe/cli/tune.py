"""`chronos-moe tune`: an Optuna search over experts, routing and learning rate."""

from __future__ import annotations

import argparse
from pathlib import Path

from chronos_moe.cli.arguments import POSITIVE, SEED, add_backend, add_command, load_config

# `chronos-moe tune --help`: what the command does, and how it is called.
DESCRIPTION = (
    "Runs an Optuna study over a base training config: each trial trains the config with "
    "sampled values (number of experts, top_k, balance weight and mode, router z-loss "
    "weight and hidden size, learning rate; or those of --search-space) for its "
    "`max_steps` and is scored by WQL on the config's `validation_data_paths`; the "
    "training CE lets a median pruner stop poor trials early.\nWrites into --output-dir "
    "the study (study.db: running the command again resumes it), trials/ (one training "
    "run per trial), best_config.yaml, trials.csv and the plots "
    "(optimization_history.png, param_importances.png).\nThe config, the search space "
    "(top_k <= num_experts in every trial) and the data files are checked before any "
    'model is built. Needs the tune extra: pip install "chronos-moe[tune]".'
)
EXAMPLES = (
    "chronos-moe tune --config my-moe.yaml --trials 20 --output-dir tuning\n"
    "chronos-moe tune --config my-moe.yaml --trials 30 --output-dir tuning   # resume, "
    "to 30 trials"
)


def add_parser(commands) -> None:
    """Adds `tune` to the sub-commands `commands`."""
    tune = add_command(
        commands,
        "tune",
        "search experts, routing and learning rate with Optuna",
        DESCRIPTION,
        EXAMPLES,
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
    add_backend(tune)
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args)  # a bad config exits here: nothing created
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
