"""`chronos-moe generate-data`: writes synthetic series to an Arrow file.

Never imports Keras: the generators are imported from their own submodules.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chronos_moe.cli.arguments import (
    POSITIVE,
    SEED,
    add_command,
    check_files,
    check_output_file,
)


def add_parser(commands) -> None:
    """Adds `generate-data` to the sub-commands `commands`."""
    generate = add_command(
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
    generate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_output_file("--output", args.output)
    if args.input and args.kind != "tsmixup":
        raise ValueError(
            "--input is read by --kind tsmixup only (the series to mix). "
            f"Received: --kind {args.kind} --input {' '.join(map(str, args.input))}"
        )
    check_files("--input", args.input)
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
