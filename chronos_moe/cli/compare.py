"""`chronos-moe compare`: trains dense and MoE on the same data and writes a report."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from chronos_moe.cli.arguments import POSITIVE, add_backend, add_command, load_config


def add_parser(commands) -> None:
    """Adds `compare` to the sub-commands `commands`."""
    compare = add_command(
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
    add_backend(compare)
    compare.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    dense = load_config(args.dense_config, args) if args.dense_config else None
    moe = load_config(args.moe_config, args) if args.moe_config else None
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
