"""`chronos-moe init-config`: prints a bundled sample training config."""

from __future__ import annotations

import argparse
import sys

from chronos_moe.cli.arguments import add_command

# `init-config` kinds -> the bundled sample configs (chronos_moe/configs).
INIT_CONFIGS = {
    "dense": "chronos-t5-tiny-sample.yaml",
    "moe": "chronos-t5-tiny-moe-sample.yaml",
    "token-moe": "chronos-t5-tiny-token-moe-sample.yaml",
    "bolt": "chronos-bolt-tiny-sample.yaml",
}


def add_parser(commands) -> None:
    """Adds `init-config` to the sub-commands `commands`."""
    init = add_command(
        commands,
        "init-config",
        "print a sample training config (YAML) to start from",
        "Prints one of the bundled sample training configs (Chronos-T5 tiny, dense, with "
        "4 series-level experts, or with token-level experts; or Chronos-Bolt tiny, dense, "
        "trained on the quantile loss) to stdout. Edit "
        "`training_data_paths` and `output_dir`; "
        "docs/configuration.md explains every key.",
        "chronos-moe init-config moe > my-moe.yaml",
    )
    init.add_argument(
        "kind",
        choices=tuple(INIT_CONFIGS),
        help="dense model, series- or token-level Mixture-of-Experts, or Chronos-Bolt",
    )
    init.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from importlib import resources

    text = resources.files("chronos_moe.configs").joinpath(INIT_CONFIGS[args.kind]).read_text()
    sys.stdout.write(text)
    return 0
