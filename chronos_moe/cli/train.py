"""`chronos-moe train`: trains a dense or MoE model from a YAML config."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from chronos_moe.cli.arguments import add_backend, add_command, load_config
from chronos_moe.validation import cluster_settings


def add_parser(commands) -> None:
    """Adds `train` to the sub-commands `commands`."""
    train = add_command(
        commands,
        "train",
        "train a dense or MoE model from a YAML config",
        "Trains a model as the YAML config says and writes checkpoints, logs and the final "
        "model into its `output_dir`.\nThe config, the output directory's lock and the data are "
        "checked before the model is built.\n`chronos-moe init-config moe` prints a config to "
        "start from.",
        "chronos-moe init-config moe > my-moe.yaml\n"
        "chronos-moe train --config my-moe.yaml\n"
        "chronos-moe train --config my-moe.yaml --resume    # after an interruption\n"
        "torchrun --standalone --nproc_per_node=8 -m chronos_moe train --config my-moe.yaml"
        "    # torch DDP",
    )
    train.add_argument(
        "--config", required=True, type=Path, metavar="YAML", help="YAML training config"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint that verifies (newer broken ones are named)",
    )
    train.add_argument(
        "--resume-from",
        type=Path,
        metavar="PATH",
        help="continue from this checkpoint (.../checkpoints/step-N) or fail; no fall-back "
        "(default: none, start at step 0 unless --resume)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an output directory of another run"
    )
    add_backend(train)
    train.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args)  # a bad config exits here: nothing created
    if args.resume_from and (args.resume or args.overwrite):
        raise ValueError("--resume-from names the checkpoint to resume; drop --resume/--overwrite")
    if args.resume_from and not args.resume_from.is_dir():
        raise ValueError(
            f"argument --resume-from: {args.resume_from} is not a checkpoint directory "
            f"(.../checkpoints/step-N). Received: --resume-from {args.resume_from}"
        )
    from chronos_moe.training.lock import OutputLock

    # The lock before Keras is imported: a second run on this directory exits at
    # once. Under torchrun, rank 0 (`RANK`) holds it for all the processes; in a
    # multi-host JAX run, process 0 (`process_id`, or KERAS_DISTRIBUTION_PROCESS_ID).
    rank = int(os.environ.get("RANK") or cluster_settings(config.distribution)["process_id"])
    with OutputLock(config.output_dir) if rank == 0 else contextlib.nullcontext():
        from chronos_moe import backend
        from chronos_moe.training.run import TrainingStopped, train

        try:
            result = train(
                config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from
            )
        except TrainingStopped as stopped:  # SIGTERM: a clean stop, exit status 0
            print(f"chronos-moe train: {stopped}", file=sys.stderr)
            return 0
        finally:
            backend.shutdown_processes()
    if rank == 0:
        print(f"Final model: {result.final_dir}")
    return 0
