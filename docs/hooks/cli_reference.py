"""MkDocs hook: writes the CLI reference from the `chronos-moe` argparse parser.

`docs/cli.md` holds the marker `<!-- cli-reference -->`; at build time it is
replaced by one section per sub-command (usage, description, example, a table
of every option), so the page cannot drift from the parsers in `chronos_moe/cli/`.
`tests/test_docs.py` calls `render` directly.
"""

from __future__ import annotations

import argparse
import re

MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(description: str) -> str:
    """A sub-command's description: its indented lines (a table of choices) as a list."""
    lines = []
    for line in description.splitlines():
        if line[:1].isspace():
            name, _, meaning = line.strip().partition(" ")
            lines.append(f"- `{name}`: {meaning.strip()}")
        else:
            lines.append(line)
        if len(lines) > 1 and lines[-1].startswith("- ") != lines[-2].startswith("- "):
            lines.insert(-1, "")  # a blank line around the list
    return "\n".join(lines)


def _option_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.dest}`"
    if action.nargs == 0:
        value = "flag"
    else:
        metavar = action.metavar or action.dest.upper()
        if action.choices:
            metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
        value = f"`{metavar}`" + (" …" if action.nargs in ("+", "*") else "")
    if getattr(action.type, "expected", None):  # the range of the CLI's integer types
        value += f" ({action.type.expected})"
    meaning = action.help or ""
    if action.required:
        default = "required"
    elif action.nargs == 0:
        default = "–"
    elif action.default is None:
        # Options without a value say in their help what happens: "(default: ...)".
        match = re.search(r"\s*\(default: (.*)\)$", meaning)
        default = match.group(1) if match else "–"
        meaning = meaning[: match.start()] if match else meaning
    else:
        default = f"`{action.default}`"
    return f"| {names} | {value} | {_cell(default)} | {_cell(meaning)} |"


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of every sub-command and option of `parser`
    (default: `chronos_moe.cli.build_parser()`)."""
    if parser is None:
        from chronos_moe.cli import build_parser

        parser = build_parser()
    lines = [f"```text\n{parser.format_usage().strip()}\n```", ""]
    for name, sub in _subcommands(parser).items():
        summary = _help_of(parser, name)
        lines += [f"## `{parser.prog} {name}`", "", summary[:1].upper() + summary[1:] + ".", ""]
        lines += [f"```text\n{sub.format_usage().strip()}\n```", ""]
        if sub.description:
            lines += [_markdown(sub.description), ""]
        if sub.epilog:  # "example:" and the indented command lines
            example = [line.strip() for line in sub.epilog.splitlines()[1:]]
            lines += ["Example:", "", "```bash", *example, "```", ""]
        lines += ["| option | value | default | meaning |", "|---|---|---|---|"]
        lines += [
            _option_row(action)
            for action in sub._actions
            if not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS
        ]
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (the MkDocs hook signature)
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
