"""`chronos-moe analyze-experts`: the routing report of a MoE model on Arrow files."""

from __future__ import annotations

import argparse
from pathlib import Path

from chronos_moe.cli.arguments import (
    EXAMPLES_PER_EXPERT,
    POSITIVE,
    add_backend,
    add_command,
    check_files,
)


def add_parser(commands) -> None:
    """Adds `analyze-experts` to the sub-commands `commands`."""
    analyze = add_command(
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
    add_backend(analyze)
    analyze.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_files("--data", args.data)
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
