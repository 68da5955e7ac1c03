"""The `chronos-moe` command line: train, compare, tune, generate-data, evaluate,
forecast, analyze-experts, init-config.

The backend (`--backend`, else a config's `backend` key, else
`$KERAS_BACKEND`) is set before Keras is imported, so every sub-command imports
the library inside its handler.

Example (the whole demo: train dense and MoE on generated data, write a report):

    chronos-moe compare --quick --output-dir compare-output

One module per sub-command (`train.py`, `compare.py`, ...), each with
`add_parser(commands)` and `run(args)`; what they share is in `arguments.py`;
`entry_point.py` holds the top-level parser and `main`.
"""

from __future__ import annotations

from chronos_moe.cli.entry_point import build_parser, main

__all__ = ["build_parser", "main"]
