"""Data pipeline throughput: windows/s and batches/s of `ChronosDataset`.

The reference training setup (batch 32, context 512, prediction 64, shuffle buffer
100, missing-value augmentation on) over an Arrow file of generated series
(`generate_sample_series`), written once into a temporary directory. Measured:

* open: `ArrowSeriesFile` open time (the validating scan over every value);
* windows: `TrainingWindows` alone (read, augment, cut; no tokenization);
* train batches: `ChronosDataset` training batches, tokenized (what `fit` reads);
* validation batches: `ChronosDataset(mode="validation")`, one pass;
* in-memory train batches: the same from a list of numpy arrays;
* optionally (`--train-step`) the time of one `train_on_batch` of a randomly
  initialised chronos-t5-tiny on the same batches, for comparison: the data
  pipeline must be far faster than training so that training is never input-bound.

Every figure is the median of `--repeats` timed runs after one untimed warm-up.

Usage (from the repository root):

    KERAS_BACKEND=torch python benchmarks/data_throughput.py
    KERAS_BACKEND=torch python benchmarks/data_throughput.py --quick
    KERAS_BACKEND=jax python benchmarks/data_throughput.py --train-step

Prints a Markdown table and writes `benchmarks/results/data_throughput_<backend>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def _median_rate(function, count: int, repeats: int) -> tuple[float, float]:
    """`(items per second, seconds per run)`: the median over `repeats` runs of `count` items."""
    function()  # warm-up
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    seconds = statistics.median(durations)
    return count / seconds, seconds


def _machine() -> dict:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {n: version(n) for n in ("numpy", "pyarrow", "keras", "torch", "jax")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-series", type=int, default=2000)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=50, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller file, fewer batches")
    parser.add_argument("--train-step", action="store_true", help="also time a tiny model step")
    args = parser.parse_args()
    if args.quick:
        args.num_series, args.length, args.batches, args.repeats = 500, 1024, 20, 3

    import keras

    from chronos_moe.config import ChronosConfig
    from chronos_moe.data import (
        ArrowSeriesFile,
        ChronosDataset,
        TrainingWindows,
        generate_sample_series,
        write_arrow,
    )

    batch_size, context, horizon = 32, 512, 64
    config = ChronosConfig(context_length=context, prediction_length=horizon)
    series = generate_sample_series(args.num_series, args.length, seed=0)
    rows = []

    def row(name, rate, unit, seconds, windows_per_second=None):
        rows.append(
            {
                "measure": name,
                "rate": rate,
                "unit": unit,
                "seconds_per_run": seconds,
                "windows_per_second": windows_per_second,
            }
        )

    with tempfile.TemporaryDirectory() as directory:
        path = write_arrow(series, Path(directory) / "bench.arrow")
        size_mb = path.stat().st_size / 1e6

        def open_file():
            ArrowSeriesFile(path).close()

        rate, seconds = _median_rate(open_file, 1, args.repeats)
        row("open (validating scan)", size_mb / seconds, "MB/s", seconds)

        file = ArrowSeriesFile(path)
        windows = TrainingWindows([file], context, horizon, 64, seed=0)
        count = args.batches * batch_size
        rate, seconds = _median_rate(
            lambda: [next(windows) for _ in range(count)], count, args.repeats
        )
        row("windows (no tokenization)", rate, "windows/s", seconds, rate)

        def batches(dataset):
            position = [0]

            def run():
                for _ in range(args.batches):
                    dataset[position[0]]
                    position[0] += 1

            return run

        train = ChronosDataset([file], config, batch_size=batch_size, seed=0)
        rate, seconds = _median_rate(batches(train), args.batches, args.repeats)
        row("train batches (Arrow)", rate, "batches/s", seconds, rate * batch_size)

        memory = ChronosDataset(series, config, batch_size=batch_size, seed=0)
        rate, seconds = _median_rate(batches(memory), args.batches, args.repeats)
        row("train batches (in memory)", rate, "batches/s", seconds, rate * batch_size)

        validation = ChronosDataset([file], config, batch_size=batch_size, mode="validation")
        total = validation.num_batches

        def one_pass():
            for index in range(total):
                validation[index]

        rate, seconds = _median_rate(one_pass, total, args.repeats)
        row("validation batches (Arrow)", rate, "batches/s", seconds, rate * batch_size)

        if args.train_step:
            import chronos_moe

            model = chronos_moe.ChronosT5.from_preset(
                "tiny", initializer_factor=0.05, chronos_config=config.to_dict()
            )
            model.compile(optimizer=keras.optimizers.AdamW(1e-3))
            step_batches = [train[i] for i in range(4)]
            model.train_on_batch(step_batches[0])  # build and compile

            def steps():
                for batch in step_batches:
                    model.train_on_batch(batch)

            rate, seconds = _median_rate(steps, len(step_batches), max(2, args.repeats // 2))
            row("chronos-t5-tiny train step (for comparison)", rate, "steps/s", seconds, rate * 32)
        file.close()

    backend = keras.backend.backend()
    print(
        f"\nChronosDataset throughput — backend {backend}, batch {batch_size}, context {context}, "
        f"prediction {horizon}, {args.num_series} series × {args.length} values "
        f"({size_mb:.0f} MB), median of {args.repeats}\n"
    )
    print("| measure | rate | windows/s | seconds per run |")
    print("|---|---:|---:|---:|")
    for r in rows:
        rate = f"{r['rate']:,.1f}" if r["rate"] >= 10 else f"{r['rate']:.3g}"
        windows_rate = "" if r["windows_per_second"] is None else f"{r['windows_per_second']:,.1f}"
        print(
            f"| {r['measure']} | {rate} {r['unit']} | {windows_rate} | {r['seconds_per_run']:.3g} |"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = RESULTS_DIR / f"data_throughput_{backend}.json"
    result = {
        "command": " ".join([f"KERAS_BACKEND={backend}", *sys.argv]),
        "machine": _machine(),
        "settings": {
            "batch_size": batch_size,
            "context_length": context,
            "prediction_length": horizon,
            "num_series": args.num_series,
            "length": args.length,
            "file_mb": size_mb,
            "batches_per_run": args.batches,
            "repeats": args.repeats,
        },
        "results": rows,
    }
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
