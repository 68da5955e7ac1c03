"""What the sub-commands of `chronos-moe` share: the help formatter, the
checked argparse types, `--backend`, config loading and the input checks that
run before any heavy work.

The package's internal API: each sub-command module imports from here; only
`main` and `build_parser` are exported by `chronos_moe.cli`.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path


class HelpFormatter(argparse.HelpFormatter):
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


def int_type(low: int, high: int | None = None):
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


def quantile_level(text: str) -> float:
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


quantile_level.__name__ = "quantile level"
quantile_level.expected = "in (0, 1)"

POSITIVE = int_type(1)
SEED = int_type(0, 2**32 - 1)  # numpy's seed range
EXAMPLES_PER_EXPERT = int_type(1, 20)


def add_command(commands, name: str, summary: str, description: str, example: str):
    """A sub-command with its one-line summary (in `chronos-moe --help`), a
    description and an example (in `chronos-moe NAME --help`).

    The sub-parser is kept in its own defaults (`args.command_parser`), so that
    `main` can report an error with the sub-command's name and usage."""
    command = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=HelpFormatter,
    )
    command.set_defaults(command_parser=command)
    return command


def add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("torch", "jax"),
        help="Keras backend (default: the config's `backend`, else $KERAS_BACKEND, else torch "
        "if installed, else jax)",
    )


def load_config(path: Path, args: argparse.Namespace):
    """Reads a YAML config; `--backend` overrides its `backend`, which otherwise
    chooses the backend when Keras is not imported yet."""
    from chronos_moe.training.config import TrainingConfig

    config = TrainingConfig.from_yaml(path)
    if args.backend:
        return config.replace(backend=args.backend)
    if config.backend and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = config.backend
    return config


def check_files(option: str, paths: list[Path] | None) -> None:
    """Each of `paths` is an existing file; checked before any heavy work."""
    for path in paths or ():
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise ValueError(f"argument {option}: {path} {problem}. Received: {option} {path}")


def check_output_file(option: str, path: Path) -> None:
    """`path` can be written: its directory exists and it is not a directory."""
    if path.is_dir():
        raise ValueError(f"argument {option}: {path} is a directory. Received: {option} {path}")
    if not path.parent.is_dir():
        raise ValueError(
            f"argument {option}: the directory {path.parent} does not exist. "
            f"Received: {option} {path}"
        )


def check_model(option: str, model: str) -> None:
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


def check_suffix(option: str, path: Path, formats: dict[str, str]) -> None:
    """`path` ends in one of the suffixes of `formats`."""
    if path.suffix.lower() not in formats:
        raise ValueError(
            f"argument {option}: expected a file ending in {', '.join(sorted(formats))}. "
            f"Received: {option} {path}"
        )
