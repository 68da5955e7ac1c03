"""Reads training batches the way `chronos-moe train` does and reports its memory.

    python -m tests.reliability.streaming_worker CONFIG.yaml BATCHES

Builds the training stream from a YAML config (`chronos_moe.training.run.build_dataset`,
the `ChronosDataset` a training run reads), takes `BATCHES` batches in the order
the step loop takes them, and prints one JSON line: the resident set before the
dataset is opened (after every import), the peak resident set while reading
(`VmHWM`, reset to the current RSS first), their difference, and the seconds to
the first batch (opening the file included). Linux only (`/proc/self`).
"""

from __future__ import annotations

import json
import sys
import time


def _status(key: str) -> int:
    """A `/proc/self/status` entry in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def main(config_path: str, batches: int) -> dict:
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import build_dataset

    config = TrainingConfig.from_yaml(config_path)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    started = time.perf_counter()
    dataset = build_dataset(config)
    first = dataset[0]
    first_batch_s = time.perf_counter() - started
    shapes = {key: list(value.shape) for key, value in first.items()}
    for index in range(1, batches):
        dataset[index]
    peak = _status("VmHWM")
    report = dataset.report.sources[0]
    return {
        "batches": batches,
        "rss_before": before,
        "peak_rss": peak,
        "growth": peak - before,
        "first_batch_s": first_batch_s,
        "seconds": time.perf_counter() - started,
        "shapes": shapes,
        "series": report.series,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
