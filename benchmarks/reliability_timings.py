"""Wall-clock figures of issue 9's early exits (the tests assert behaviour, not time).

    flock /tmp/cpu.lock python benchmarks/reliability_timings.py [--repeats 10]

Times, each over `--repeats` fresh `chronos-moe train` processes:

* `bad_config`: a config with `num_active_experts > num_experts` → exit 2 (item 8: < 5 s);
* `lock_loser`: a second run on an output directory a live run holds → exit 2
  naming the holder's pid (item 13: < 5 s);
* `lock_after_kill`: after the holder is SIGKILLed, a new run holds the lock
  (item 13: "at once").

Writes `benchmarks/results/reliability_timings.json` and prints a table; exits
non-zero if a maximum exceeds the issue's 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "chronos_moe" / "configs" / "chronos-t5-tiny-moe-sample.yaml"
LIMIT_S = 5.0


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "chronos_moe.cli", "train", "--config", str(config)]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def wait_until(condition, limit: float = 300.0) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > limit:
            raise TimeoutError
        time.sleep(0.005)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.training.helpers import make_data, make_start_checkpoint, small_config

    times: dict[str, list[float]] = {"bad_config": [], "lock_loser": [], "lock_after_kill": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bad = yaml.safe_load(SAMPLE.read_text())
        bad.update(num_active_experts=5, output_dir=str(folder / "bad-output"))
        (folder / "bad.yaml").write_text(yaml.safe_dump(bad))
        start = make_start_checkpoint(folder / "start")
        data, _ = make_data(folder)
        config = small_config(start, data, folder / "output", max_steps=10**6, save_steps=10**6)
        (folder / "run.yaml").write_text(yaml.safe_dump(config.to_dict()))
        lock = folder / "output" / ".lock"
        for _ in range(args.repeats):
            started = time.perf_counter()
            completed = subprocess.run(
                command(folder / "bad.yaml"), env=environment(), capture_output=True
            )
            times["bad_config"].append(time.perf_counter() - started)
            assert completed.returncode == 2, completed.stderr

            holder = subprocess.Popen(
                command(folder / "run.yaml") + ["--overwrite"],
                env=environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda pid=holder.pid: lock.is_file() and lock.read_text() == str(pid))
            started = time.perf_counter()
            loser = subprocess.run(
                command(folder / "run.yaml") + ["--overwrite"],
                env=environment(),
                capture_output=True,
                text=True,
            )
            times["lock_loser"].append(time.perf_counter() - started)
            assert loser.returncode == 2 and f"pid {holder.pid}" in loser.stderr, loser.stderr
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            started = time.perf_counter()
            successor = subprocess.Popen(
                command(folder / "run.yaml") + ["--overwrite"],
                env=environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda pid=successor.pid: lock.read_text() == str(pid))
            times["lock_after_kill"].append(time.perf_counter() - started)
            successor.kill()
            successor.wait()
    results = {
        name: {
            "runs": len(values),
            "median_s": sorted(values)[len(values) // 2],
            "max_s": max(values),
        }
        for name, values in times.items()
    }
    output = ROOT / "benchmarks" / "results" / "reliability_timings.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps({"backend": os.environ.get("KERAS_BACKEND"), **results}, indent=1))
    print(f"{'case':<16} {'runs':>4} {'median s':>9} {'max s':>7}")
    for name, figure in results.items():
        print(f"{name:<16} {figure['runs']:>4} {figure['median_s']:>9.3f} {figure['max_s']:>7.3f}")
    return 0 if all(figure["max_s"] < LIMIT_S for figure in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
