"""Two runs, one output directory (issue 9, item 13).

Two `chronos-moe train` processes are started at once on the same output
directory: exactly one runs (reaches its step loop), the other exits with
status 2 naming the holder's pid; after the holder is SIGKILLed, a new run
takes the directory at once (the OS released the lock with the process).
The lock is taken right after the
config is validated, before Keras is imported and before data or model are
loaded, so the loser exits in a fraction of a second (timed by
`benchmarks/reliability_timings.py`, figures in docs/reliability.md).

CI runs 2 races per backend; the 20-race version is
`KERAS_BACKEND=torch python -m pytest -m slow tests/reliability/test_output_lock.py -s`.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
import yaml

from chronos_moe.training.lock import OutputLock, RunError
from tests.training.helpers import make_data, make_start_checkpoint, small_config

ROOT = Path(__file__).resolve().parents[2]
WAIT = 300  # seconds: a generous bound for a process to reach a state (not a timing claim)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lock")
    start = make_start_checkpoint(folder / "start")
    data, _ = make_data(folder)
    config = small_config(
        start, data, folder / "output", max_steps=1_000_000, save_steps=1_000_000, log_steps=1
    )
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def spawn(config_file: Path, logs: Path, name: str) -> subprocess.Popen:
    """`chronos-moe train --overwrite` in a fresh process; stdout/stderr to `logs/name.*`."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KERAS_BACKEND": keras.backend.backend(),
        "PYTHONUNBUFFERED": "1",
    }
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "chronos_moe.cli", "train", "--config", str(config_file)]
            + ["--overwrite"],
            stdout=out,
            stderr=err,
            env=environment,
        )


def wait_for(condition, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > WAIT:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def training(logs: Path, name: str) -> bool:
    """The run holds the directory and has built its model: it printed the line that
    starts its step loop (after clearing the other run's files)."""
    return "chronos-moe train: backend" in (logs / f"{name}.out").read_text()


def race(config_file: Path, logs: Path) -> dict[str, float]:
    """One race; returns the loser's exit time and the restarted run's lock time."""
    output = Path(yaml.safe_load(config_file.read_text())["output_dir"])
    first, second = spawn(config_file, logs, "a"), spawn(config_file, logs, "b")
    started = time.monotonic()
    processes = {"a": first, "b": second}
    try:
        wait_for(lambda: any(p.poll() is not None for p in processes.values()), "a loser")
        lost = time.monotonic() - started
        loser = next(n for n, p in processes.items() if p.poll() is not None)
        winner = "b" if loser == "a" else "a"
        holder = processes[winner]
        error = (logs / f"{loser}.err").read_text()
        assert processes[loser].returncode == 2, error
        assert f"Another run (pid {holder.pid}) is writing {output}" in error
        assert "Traceback" not in error
        wait_for(
            lambda: training(logs, winner) or holder.poll() is not None,
            "the holder to train",
        )
        assert holder.poll() is None, (logs / f"{winner}.err").read_text()  # exactly one runs
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        # A new run takes the directory at once: the OS released the dead holder's lock.
        restarted = spawn(config_file, logs, "c")
        processes["c"] = restarted
        taken = wait_for(
            lambda: (
                (output / ".lock").read_text() == str(restarted.pid) or restarted.poll() is not None
            ),
            "the new run to take the lock",
        )
        assert restarted.poll() is None, (logs / "c.err").read_text()
        wait_for(lambda: training(logs, "c") or restarted.poll() is not None, "the new run")
        assert restarted.poll() is None, (logs / "c.err").read_text()
        return {"loser_exit_s": lost, "lock_taken_s": taken}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def run_races(config_file: Path, tmp_path: Path, count: int) -> list[dict[str, float]]:
    figures = []
    for trial in range(count):
        logs = tmp_path / f"race-{trial}"
        logs.mkdir()
        figures.append(race(config_file, logs))
    print(
        f"\n{count} races: loser exits after at most "
        f"{max(f['loser_exit_s'] for f in figures):.2f} s, the restarted run holds the lock "
        f"after at most {max(f['lock_taken_s'] for f in figures):.2f} s"
    )
    return figures


def test_two_runs_one_directory(config_file, tmp_path):
    assert len(run_races(config_file, tmp_path, 2)) == 2


@pytest.mark.slow
def test_two_runs_one_directory_20_races(config_file, tmp_path):
    assert len(run_races(config_file, tmp_path, 20)) == 20


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with OutputLock(tmp_path / "out"):
        with OutputLock(tmp_path / "out"):  # the command line, then train()
            pass
        assert (tmp_path / "out" / ".lock").read_text() == str(os.getpid())
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "from chronos_moe.training.lock import OutputLock; "
                f"OutputLock({str(tmp_path / 'out')!r}).__enter__()",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        assert f"RunError: Another run (pid {os.getpid()})" in other.stderr
    with OutputLock(tmp_path / "out"):  # released
        pass


def test_a_failed_start_leaves_no_directory_it_created(tmp_path):
    with pytest.raises(RunError):
        with OutputLock(tmp_path / "new"):
            raise RunError("bad data")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(RunError):
        with OutputLock(tmp_path / "old"):
            raise RunError("bad data")
    assert (tmp_path / "old").exists()  # not ours to remove
