"""The entry point of `chronos-moe`: the top-level parser, which each
sub-command module extends with its own parser, and `main`, which runs the
chosen sub-command and turns bad input into a one-line error."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings

from chronos_moe.cli import (
    analyze_experts,
    compare,
    evaluate,
    forecast,
    generate_data,
    init_config,
    train,
    tune,
)
from chronos_moe.cli.arguments import HelpFormatter

# The sub-command modules, in the order of `chronos-moe --help`; each has
# `add_parser(commands)` and `run(args)`.
COMMANDS = (
    train,
    compare,
    tune,
    generate_data,
    evaluate,
    forecast,
    analyze_experts,
    init_config,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from chronos_moe import __version__

    parser = argparse.ArgumentParser(
        prog="chronos-moe",
        description="Chronos T5 forecasting models with Mixture-of-Experts, in Keras 3. "
        "`chronos-moe COMMAND --help` describes a command.",
        epilog="example:\n  chronos-moe compare --quick    # train dense and MoE, write a report",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
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
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
