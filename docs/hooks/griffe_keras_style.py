"""Griffe extension: reads the keras-hub docstring style of chronos-moe.

The docstrings end with their runnable examples under an `Example:` heading
(keras-hub's style), not indented under it. Google style, which griffe parses,
wants an `Examples:` section whose lines are indented. Rewriting the heading
and indenting what follows at load time makes the `>>>` lines render as code.
"""

from __future__ import annotations

import re

import griffe

_HEADING = re.compile(r"^Example:\s*$", flags=re.MULTILINE)


def keras_to_google(docstring: str) -> str:
    """Turns a trailing keras-hub `Example:` block into a Google `Examples:` section."""
    match = _HEADING.search(docstring)
    if match is None:
        return docstring
    body = docstring[match.end() :].split("\n")
    indented = [("    " + line) if line.strip() else "" for line in body]
    return docstring[: match.start()] + "Examples:" + "\n".join(indented)


class KerasStyleDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = keras_to_google(obj.docstring.value)
