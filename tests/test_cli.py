"""The `chronos-moe` command line, called in-process through `cli.main(argv)`:
every sub-command on a tiny model, and bad input ending in a one-line error
with exit status 2."""

import argparse
import csv
import functools
import json
import signal
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from chronos_moe import cli
from chronos_moe.data import read_arrow
from chronos_moe.training import compare as compare_module
from chronos_moe.training import faults
from chronos_moe.training.config import TrainingConfig
from tests.training.helpers import (
    PREDICTION_LENGTH,
    make_data,
    make_start_checkpoint,
    small_config,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(capsys, *argv):
    """`(exit status, stdout, stderr)` of `chronos-moe argv...`."""
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def write_config(path, config):
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return make_start_checkpoint(tmp_path_factory.mktemp("start"))


@pytest.fixture(scope="module")
def comparison(start, tmp_path_factory):
    """`chronos-moe compare --quick` on the demo data, shrunk to the tiny start
    checkpoint, 3 steps and 12 demo series so that it runs in seconds."""
    output = tmp_path_factory.mktemp("compare")
    quick = {
        "context_length": 16,
        "prediction_length": PREDICTION_LENGTH,
        "min_past": 8,
        "max_steps": 3,
        "save_steps": 3,
        "log_steps": 1,
        "per_device_train_batch_size": 4,
    }

    def sample_config(name):
        return small_config(start, "unused.arrow", "unused", use_moe="moe" in name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare_module, "QUICK_OVERRIDES", quick)
        patch.setattr(compare_module, "sample_config", sample_config)
        patch.setattr(
            compare_module,
            "make_demo_data",
            functools.partial(compare_module.make_demo_data, num_series=12),
        )
        status = cli.main(["compare", "--quick", "--output-dir", str(output), "--num-samples", "5"])
    assert status == 0
    return output


# ---- help, version, argument checks ------------------------------------------------------

COMMANDS = (
    "train",
    "compare",
    "tune",
    "generate-data",
    "evaluate",
    "forecast",
    "analyze-experts",
    "init-config",
)


def test_version(capsys):
    from chronos_moe import __version__

    status, out, _ = run_cli(capsys, "--version")
    assert status == 0 and out.strip() == f"chronos-moe {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_describes_the_command_and_every_option(command, capsys):
    status, out, _ = run_cli(capsys, command, "--help")
    assert status == 0
    assert "example:\n  chronos-moe " in out
    description = out.split("\n\n")[1]
    assert len(description.split()) >= 10, description
    options = out.split("\noptions:\n")[1].split("\n\nexample:")[0]
    for action in subcommands()[command]._actions:
        if not action.option_strings or action.option_strings == ["-h", "--help"]:
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        entry = options.split(f"\n  {action.option_strings[0]}")[1].split("\n  -")[0]
        entry = " ".join(entry.split())  # undo the line wrapping
        if action.nargs != 0:  # flags have no default to show
            assert "(required)" in entry or "(default: " in entry, entry


def subcommands():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


@pytest.mark.parametrize(
    "argv, option, message",
    [
        (["compare", "--num-samples", "0"], "--num-samples", "integer >= 1. Received: 0"),
        (["compare", "--dense-config", "{tmp}/none.yaml"], "none.yaml", "Cannot read config"),
        (["train", "--config", "{tmp}/none.yaml"], "none.yaml", "Cannot read config"),
        (["generate-data", "--num-series", "-2", "--output", "{tmp}/o.arrow"], "--num-series",
         "Received: -2"),
        (["generate-data", "--length", "0", "--output", "{tmp}/o.arrow"], "--length",
         "Received: 0"),
        (["generate-data", "--seed", "-1", "--output", "{tmp}/o.arrow"], "--seed",
         "between 0 and"),
        (["generate-data", "--seed", "x", "--output", "{tmp}/o.arrow"], "--seed",
         "Received: 'x'"),
        (["generate-data", "--output", "{tmp}/missing-dir/x.arrow"], "--output",
         "the directory {tmp}/missing-dir does not exist"),
        (["generate-data", "--output", "{tmp}"], "--output", "is a directory"),
        (["generate-data", "--kind", "tsmixup", "--input", "{tmp}/in.arrow", "--output",
          "{tmp}/o.arrow"], "--input", "{tmp}/in.arrow does not exist"),
        (["evaluate", "--model", "m", "--data", "{tmp}/d.arrow", "--prediction-length", "0"],
         "--prediction-length", "Received: 0"),
        (["evaluate", "--model", "m", "--data", "{tmp}/d.arrow", "--prediction-length", "4",
          "--batch-size", "0"], "--batch-size", "Received: 0"),
        (["evaluate", "--model", "m", "--data", "{tmp}/d.arrow", "--prediction-length", "4",
          "--num-samples", "-5"], "--num-samples", "Received: -5"),
        (["evaluate", "--model", "m", "--data", "{tmp}/d.arrow", "--prediction-length", "4"],
         "--data", "{tmp}/d.arrow does not exist"),
        (["evaluate", "--model", "m", "--data", "{data}", "--prediction-length", "4",
          "--output", "{tmp}"], "--output", "{tmp} is a directory"),
        (["analyze-experts", "--model", "m", "--data", "{data}", "--examples-per-expert", "-1"],
         "--examples-per-expert", "between 1 and 20. Received: -1"),
        (["analyze-experts", "--model", "m", "--data", "{data}", "--batch-size", "0"],
         "--batch-size", "Received: 0"),
        (["analyze-experts", "--model", "m", "--data", "{tmp}/d.arrow"], "--data",
         "does not exist"),
        (["forecast", "--model", "m", "--data", "{data}", "--prediction-length", "0", "--output",
          "{tmp}/f.csv"], "--prediction-length", "Received: 0"),
        (["forecast", "--model", "m", "--data", "{data}", "--prediction-length", "4", "--output",
          "{tmp}/f.csv", "--quantile-levels", "0.5", "1.5"], "--quantile-levels",
         "between 0 and 1 (exclusive). Received: 1.5"),
        (["forecast", "--model", "m", "--data", "{data}", "--prediction-length", "4", "--output",
          "{tmp}/f.csv", "--quantile-levels", "median"], "--quantile-levels",
         "Received: 'median'"),
        (["forecast", "--model", "m", "--data", "{tmp}/d.csv", "--prediction-length", "4",
          "--output", "{tmp}/f.csv"], "--data", "{tmp}/d.csv does not exist"),
        (["forecast", "--model", "m", "--data", "{data}", "--prediction-length", "4", "--output",
          "{tmp}/f.txt"], "--output", "expected a file ending in .csv, .parquet, .pq"),
        (["forecast", "--model", "{tmp}/none", "--data", "{data}", "--prediction-length", "4",
          "--output", "{tmp}/f.csv"], "--model", "{tmp}/none does not exist; expected a "
         "checkpoint directory"),
        (["forecast", "--model", "{tmp}", "--data", "{data}", "--prediction-length", "4",
          "--output", "{tmp}/f.csv"], "--model", "has no config.json"),
        (["forecast", "--model", "m", "--data", "{config}", "--prediction-length", "4",
          "--output", "{tmp}/f.csv"], "--data", "expected a file ending in .arrow, .csv"),
        (["init-config", "big"], "kind", "invalid choice: 'big'"),
        (["train", "--config", "{config}", "--resume-from", "{tmp}/step-9"], "--resume-from",
         "{tmp}/step-9 is not a checkpoint directory"),
        (["train", "--config", "{config}", "--resume", "--resume-from", "{tmp}"], "--resume-from",
         "drop --resume/--overwrite"),
        (["train", "--config", "{config}", "--max-steps", "3"], "--max-steps",
         "unrecognized arguments"),
        (["tune", "--config", "{config}", "--trials", "0", "--output-dir", "{tmp}/t"], "--trials",
         "integer >= 1. Received: 0"),
        (["tune", "--config", "{tmp}/none.yaml", "--trials", "1", "--output-dir", "{tmp}/t"],
         "none.yaml", "Cannot read config"),
        (["tune", "--config", "{config}", "--trials", "1", "--output-dir", "{tmp}/t"],
         "validation_data_paths", "Tuning scores every trial on held-out data"),
        (["tune", "--config", "{config}", "--trials", "1", "--output-dir", "{tmp}/t",
          "--search-space", "{tmp}/space.yaml"], "space.yaml", "Cannot read search space file"),
        (["tune", "--config", "{config}", "--trials", "1", "--output-dir", "{tmp}/t",
          "--timeout", "0"], "--timeout", "Received: 0"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_fast_naming_the_argument(argv, option, message, tmp_path, capsys):
    """Exit status 2, one error line naming the argument, nothing created, no model
    built: every argument is checked before any heavy work."""
    data = tmp_path / "data.arrow"
    data.write_bytes(b"")  # exists; never read
    config = tmp_path / "config.yaml"
    config.write_text(f"training_data_paths: [{data}]\noutput_dir: run\n")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    names = {"tmp": tmp_path, "data": data, "config": config}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # default output paths land here
        started = time.perf_counter()
        status, out, err = run_cli(capsys, *[arg.format(**names) for arg in argv])
        seconds = time.perf_counter() - started
    assert status == 2, err
    (line,) = [line for line in err.splitlines() if ": error: " in line]
    assert option.format(**names) in line and message.format(**names) in line, line
    assert line.startswith(f"chronos-moe {argv[0]}: error: ")
    assert out == "" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "cwd", "data.arrow"]
    assert list(workdir.iterdir()) == []
    assert seconds < 2.0


def test_init_config_prints_a_config_that_loads(tmp_path, capsys):
    for kind, use_moe, level in (
        ("dense", False, "series"),
        ("moe", True, "series"),
        ("token-moe", True, "token"),
    ):
        status, out, _ = run_cli(capsys, "init-config", kind)
        assert status == 0 and out.startswith("# ") and "Chronos-T5 (tiny)" in out
        path = tmp_path / f"{kind}.yaml"
        path.write_text(out)
        config = TrainingConfig.from_yaml(path)
        assert (config.use_moe, config.moe_level) == (use_moe, level)


def test_warnings_are_one_line_without_source(monkeypatch, capsys):
    from chronos_moe.moe.balancing import ExpertCollapseWarning

    def warn(args):
        warnings.warn("expert 0 takes 90% of the routing", ExpertCollapseWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli.init_config, "run", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status, _, err = run_cli(capsys, "init-config", "moe")
    assert status == 0
    assert err == (
        "chronos-moe init-config: warning: expert 0 takes 90% of the routing "
        "(ExpertCollapseWarning)\n"
    )


# ---- generate-data ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sample", "kernel-synth", "tsmixup"])
def test_generate_data_is_reproducible_by_seed(kind, tmp_path, capsys):
    files = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        path = tmp_path / f"{name}.arrow"
        argv = ["generate-data", "--kind", kind, "--num-series", 5, "--length", 80]
        status, out, _ = run_cli(capsys, *argv, "--seed", seed, "--output", path)
        assert status == 0 and f"Wrote 5 series to {path}" in out
        files.append(read_arrow(path))
    first, same, other = files
    assert len(first) == 5 and all(1 <= len(s) <= 80 for s in first)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(first, same, strict=True))
    assert not all(
        len(x) == len(y) and np.array_equal(x, y, equal_nan=True)
        for x, y in zip(first, other, strict=True)
    )


def test_tsmixup_mixes_the_input_files(tmp_path, capsys):
    source = tmp_path / "source.arrow"
    run_cli(capsys, "generate-data", "--num-series", 3, "--length", 70, "--output", source)
    mixed = tmp_path / "mixed.arrow"
    argv = ["generate-data", "--kind", "tsmixup", "--input", source, "--num-series", 4]
    status, _, _ = run_cli(capsys, *argv, "--length", 64, "--output", mixed)
    assert status == 0
    series = read_arrow(mixed)
    assert len(series) == 4
    # Every mix is a convex combination of mean-scaled windows: its mean |x| is at most 1.
    assert all(np.nanmean(np.abs(s)) <= 1 + 1e-5 for s in series)


def test_generate_data_bad_input(tmp_path, capsys):
    argv = ["generate-data", "--input", tmp_path / "x.arrow", "--output", tmp_path / "o.arrow"]
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and "--input is read by --kind tsmixup only" in err
    argv = ["generate-data", "--kind", "tsmixup", "--input", tmp_path / "missing.arrow"]
    status, _, err = run_cli(capsys, *argv, "--output", tmp_path / "o.arrow")
    assert status == 2 and "missing.arrow" in err
    status, _, err = run_cli(capsys, "generate-data", "--num-series", 0, "--output", tmp_path / "o")
    assert status == 2 and "--num-series" in err
    assert not (tmp_path / "o.arrow").exists() and not (tmp_path / "o").exists()


# ---- train -----------------------------------------------------------------------------


def test_train_writes_the_run_and_refuses_to_overwrite_it(start, tmp_path, capsys):
    data = tmp_path / "train.arrow"
    run_cli(capsys, "generate-data", "--num-series", 8, "--length", 60, "--output", data)
    output = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", small_config(start, data, output, max_steps=2))

    status, out, _ = run_cli(capsys, "train", "--config", config)
    assert status == 0
    assert "chronos-moe train: backend" in out and "ce_loss:" in out
    # Not a terminal: plain lines, one per logging window, no progress bar.
    assert "step 1/2 - ce_loss:" in out and "step 2/2 - ce_loss:" in out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    assert f"Final model: {output / 'final'}" in out
    assert {"config.json", "model.safetensors", "model.keras"} <= {
        p.name for p in (output / "final").iterdir()
    }
    assert (output / "log.csv").read_text().splitlines()[
        0
    ] == "step,loss,ce_loss,lb_loss,lr,seconds"

    status, _, err = run_cli(capsys, "train", "--config", config)
    assert status == 2
    assert f"chronos-moe train: error: {output} already holds files of another run" in err

    # A finished run resumes to its end: nothing left to train, the final model is rewritten.
    status, out, _ = run_cli(capsys, "train", "--config", config, "--resume")
    assert status == 0 and "resuming at step 2" in out
    assert len(json.loads((output / "log.json").read_text())) == 2

    # --overwrite replaces the run: one step now, the old checkpoints gone.
    write_config(config, small_config(start, data, output, max_steps=1, save_steps=1))
    status, _, _ = run_cli(capsys, "train", "--config", config, "--overwrite")
    assert status == 0
    assert len(json.loads((output / "log.json").read_text())) == 1
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-1"]


def test_train_config_errors_name_the_key(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("training_data_paths: [a.arrow]\nnum_expert: 4\n")
    status, _, err = run_cli(capsys, "train", "--config", path)
    assert status == 2 and "Unknown config key(s) ['num_expert']" in err
    assert "Did you mean `num_experts`?" in err and "learning_rate" not in err
    path.write_text("training_data_paths: [a.arrow]\nmax_steps: many\n")
    status, _, err = run_cli(capsys, "train", "--config", path)
    assert status == 2 and "`max_steps` must be of type int. Received: max_steps='many'" in err
    path.write_text("training_data_paths: [a.arrow, b.arrow]\nprobability: [1.0]\n")
    status, _, err = run_cli(capsys, "train", "--config", path)
    assert status == 2 and "`probability` needs one entry per training data path" in err


def test_train_data_errors_are_named_before_training(start, tmp_path, capsys):
    missing = small_config(start, tmp_path / "missing.arrow", tmp_path / "run")
    status, _, err = run_cli(
        capsys, "train", "--config", write_config(tmp_path / "a.yaml", missing)
    )
    assert status == 2 and "missing.arrow" in err
    short = tmp_path / "short.arrow"
    run_cli(capsys, "generate-data", "--num-series", 3, "--length", 10, "--output", short)
    config = small_config(start, short, tmp_path / "run2")
    status, _, err = run_cli(capsys, "train", "--config", write_config(tmp_path / "b.yaml", config))
    assert status == 2 and "short.arrow" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_overwrite_keeps_the_old_run_when_the_new_config_is_broken(start, tmp_path, capsys):
    output = tmp_path / "run"
    (output / "final").mkdir(parents=True)
    (output / "log.csv").write_text("step\n1\n")
    broken = small_config(start, tmp_path / "missing.arrow", output)
    path = write_config(tmp_path / "broken.yaml", broken)
    status, _, err = run_cli(capsys, "train", "--config", path, "--overwrite")
    assert status == 2 and "missing.arrow" in err
    assert (output / "log.csv").read_text() == "step\n1\n"


def test_a_backend_other_than_the_running_one_is_refused(start, tmp_path, capsys):
    import keras

    other = "jax" if keras.backend.backend() == "torch" else "torch"
    config = small_config(start, tmp_path / "a.arrow", tmp_path / "run", backend=other)
    status, _, err = run_cli(capsys, "train", "--config", write_config(tmp_path / "c.yaml", config))
    assert status == 2 and f"asks for backend '{other}'" in err


# ---- compare ---------------------------------------------------------------------------


def test_compare_quick_writes_the_report(comparison):
    report = (comparison / "report.md").read_text()
    for section in ("## Training", "## Forecast accuracy", "## Expert utilisation"):
        assert section in report
    for row in ("| dense |", "| moe |", "| Naive |", "| Seasonal Naive |"):
        assert report.count(row) >= 1
    assert "relative WQL | relative MASE" in report and "held out from training" in report
    seasonal_naive = next(line for line in report.splitlines() if line.startswith("| Seasonal"))
    assert seasonal_naive.endswith("| 1.0000 | 1.0000 |")
    for figure in ("training_curves.png", "utilization.png"):
        assert f"]({figure})" in report
        assert (comparison / figure).read_bytes().startswith(PNG_SIGNATURE)
    assert (comparison / "experts" / "report.md").is_file()
    summary = json.loads((comparison / "summary.json").read_text())
    for name in ("dense", "moe"):
        assert [row["step"] for row in summary[name]["log"]] == [1, 2, 3]
        assert np.isfinite([summary[name]["validation_ce"], summary[name]["relative_wql"]]).all()
    assert summary["dense"]["utilization"] is None
    assert sum(summary["moe"]["utilization"]) == pytest.approx(1.0)
    # The held-out points: train.arrow lacks the last PREDICTION_LENGTH points of test.arrow.
    train = read_arrow(comparison / "data" / "train.arrow")
    test = read_arrow(comparison / "data" / "test.arrow")
    assert all(len(b) == len(a) + PREDICTION_LENGTH for a, b in zip(train, test, strict=True))


def test_compare_refuses_an_earlier_comparison(comparison, capsys):
    status, _, err = run_cli(capsys, "compare", "--quick", "--output-dir", comparison)
    assert status == 2 and "holds an earlier comparison" in err and "--overwrite" in err


def test_compare_configs_must_share_data_seed_and_steps(start, tmp_path, capsys):
    dense = small_config(start, "a.arrow", tmp_path / "x")
    moe = dense.replace(use_moe=True, max_steps=7, seed=1)
    paths = [write_config(tmp_path / f"{n}.yaml", c) for n, c in (("d", dense), ("m", moe))]
    argv = ["compare", "--dense-config", paths[0], "--moe-config", paths[1]]
    status, _, err = run_cli(capsys, *argv, "--output-dir", tmp_path / "out")
    assert status == 2
    assert "max_steps: 4 (dense) vs 7 (MoE)" in err and "seed: 3 (dense) vs 1 (MoE)" in err
    status, _, err = run_cli(
        capsys, "compare", "--dense-config", paths[1], "--output-dir", tmp_path
    )
    assert status == 2 and "compare needs a dense config (`use_moe: false`)" in err


def test_a_sigterm_stops_compare_without_a_report(start, tmp_path, capsys, monkeypatch):
    train_path, _ = make_data(tmp_path)
    dense = small_config(start, train_path, tmp_path / "unused")
    config = write_config(tmp_path / "dense.yaml", dense)
    monkeypatch.setenv(faults.ENV, "sigterm:step.end:2")  # the dense run's second step
    output = tmp_path / "out"
    argv = ["compare", "--dense-config", config, "--output-dir", output]
    status, _, err = run_cli(capsys, *argv)
    assert status == 128 + signal.SIGTERM
    assert "stopped by SIGTERM after step 2" in err and "no report was written" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert not (output / "report.md").exists() and not (output / "moe").exists()
    assert (output / "dense" / "checkpoints" / "step-2").is_dir()


def test_quick_keeps_the_vocabulary_of_a_pretrained_start(start):
    pretrained = compare_module._quick(small_config(start, "a.arrow", "x"))
    assert pretrained.n_tokens == 64
    assert pretrained.max_steps == compare_module.QUICK_OVERRIDES["max_steps"]
    sample = compare_module._quick(compare_module.sample_config(compare_module.SAMPLE_CONFIGS[0]))
    assert sample.n_tokens == compare_module.QUICK_OVERRIDES["n_tokens"]


def test_one_config_gives_the_other_with_use_moe_flipped(start):
    dense = small_config(start, "a.arrow", "x")
    paired = compare_module._paired_configs(dense, None)
    assert paired == (dense, dense.replace(use_moe=True))
    assert compare_module._paired_configs(None, dense.replace(use_moe=True)) == paired


# ---- evaluate and analyze-experts --------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_evaluate_prints_the_table_and_writes_csv(comparison, kind, tmp_path, capsys):
    data = [comparison / "data" / "test.arrow", comparison / "data" / "train.arrow"]
    argv = ["evaluate", "--model", comparison / kind / "final", "--data", *data]
    csv_path = tmp_path / "scores.csv"
    status, out, _ = run_cli(
        capsys, *argv, "--prediction-length", PREDICTION_LENGTH, "--seasonality", 3,
        "--num-samples", 4, "--output", csv_path,
    )  # fmt: skip
    assert status == 0
    assert "aggregate (2 datasets)" in out and "Aggregate relative score" in out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out  # no bar: not a terminal
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["dataset"] for row in rows] == ["test", "train", "aggregate (geometric mean)"]
    assert all(row["seasonality"] == "3" for row in rows[:2])
    assert float(rows[0]["seasonal_naive_wql"]) > 0 and float(rows[-1]["model_relative_wql"]) > 0


def test_evaluate_bad_input(comparison, tmp_path, capsys):
    test = comparison / "data" / "test.arrow"
    model = comparison / "dense" / "final"
    base = ["evaluate", "--model", model, "--data", test, "--output", tmp_path / "s.csv"]
    status, _, err = run_cli(capsys, *base, "--prediction-length", 4, "--seasonality", 0)
    assert status == 2 and "seasonality" in err and "Received" in err
    status, _, err = run_cli(capsys, *base, "--prediction-length", 1000)
    assert status == 2 and "No series of dataset 'test' can be evaluated" in err
    status, _, err = run_cli(capsys, *base[:4], tmp_path / "none.arrow", "--prediction-length", 4)
    assert status == 2 and "none.arrow" in err
    status, _, err = run_cli(
        capsys, "evaluate", "--model", tmp_path, "--data", test, "--prediction-length", 4
    )
    assert status == 2 and str(tmp_path) in err
    assert not (tmp_path / "s.csv").exists()


def test_evaluate_a_baseline(comparison, tmp_path, capsys):
    test = comparison / "data" / "test.arrow"
    argv = ["evaluate", "--model", "seasonal_naive", "--data", test, "--prediction-length", 4]
    status, out, _ = run_cli(capsys, *argv, "--output", tmp_path / "s.csv")
    assert status == 0 and "WQL 1.0000, MASE 1.0000" in out


def test_analyze_experts_writes_the_routing_report(comparison, tmp_path, capsys):
    test = comparison / "data" / "test.arrow"
    argv = ["analyze-experts", "--model", comparison / "moe" / "final", "--data", test]
    status, out, _ = run_cli(capsys, *argv, "--output-dir", tmp_path / "report")
    assert status == 0 and "Routed 12 series: 3 experts, top-2" in out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Utilisation" in text and "| test | 12 |" in text
    assert (tmp_path / "report" / "utilization.png").read_bytes().startswith(PNG_SIGNATURE)


def test_analyze_experts_needs_a_moe_model(comparison, tmp_path, capsys):
    test = comparison / "data" / "test.arrow"
    argv = ["analyze-experts", "--model", comparison / "dense" / "final", "--data", test]
    status, _, err = run_cli(capsys, *argv, "--output-dir", tmp_path / "report")
    assert status == 2 and "needs a Mixture-of-Experts checkpoint" in err


def test_the_sample_configs_name_the_compare_defaults():
    for name in compare_module.SAMPLE_CONFIGS:
        assert isinstance(compare_module.sample_config(name), TrainingConfig)


# ---- forecast ------------------------------------------------------------------------------


def sales_frame(num_series=3, length=40):
    """A long-format frame, rows shuffled, string ids, hourly timestamps."""
    rng = np.random.default_rng(0)
    parts = [
        pd.DataFrame(
            {
                "item_id": f"store_{k}",
                "timestamp": pd.date_range("2024-01-01", periods=length, freq="h"),
                "target": 10 + 3 * np.sin(np.arange(length) / 3 + k) + rng.normal(size=length),
            }
        )
        for k in range(num_series)
    ]
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=0)


@pytest.fixture(scope="module")
def moe_start(start, tmp_path_factory):
    from chronos_moe import checkpoints
    from chronos_moe.moe.model import build_moe_chronos

    moe = build_moe_chronos(checkpoints.load_chronos(start), num_experts=2, top_k=1)
    return checkpoints.save_chronos(moe, tmp_path_factory.mktemp("moe-start"))


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_forecast_csv_in_writes_the_predict_df_frame(kind, start, moe_start, tmp_path, capsys):
    from chronos_moe.pipeline import ChronosPipeline

    model = start if kind == "dense" else moe_start
    frame = sales_frame()
    frame.to_csv(tmp_path / "sales.csv", index=False)
    output = tmp_path / "forecasts.csv"
    status, out, err = run_cli(
        capsys, "forecast", "--model", model, "--data", tmp_path / "sales.csv",
        "--prediction-length", 3, "--quantile-levels", 0.1, 0.5, 0.9, "--num-samples", 4,
        "--output", output,
    )  # fmt: skip
    assert status == 0, err
    assert f"3 forecast steps for each of 3 series to {output}" in out
    assert "\r" not in out and "\x1b" not in out  # no bar: not a terminal
    written = pd.read_csv(output, parse_dates=["timestamp"])
    assert list(written.columns) == [
        "item_id", "timestamp", "target_name", "predictions", "0.1", "0.5", "0.9"
    ]  # fmt: skip
    expected = ChronosPipeline.from_pretrained(model).predict_df(
        frame, prediction_length=3, quantile_levels=[0.1, 0.5, 0.9], num_samples=4, seed=0
    )
    assert written["item_id"].tolist() == expected["item_id"].tolist()
    assert (written["timestamp"] == expected["timestamp"]).all()
    assert written["timestamp"].iloc[0] == pd.Timestamp("2024-01-02 16:00")
    np.testing.assert_allclose(written["0.5"], expected["0.5"], rtol=1e-6)


def test_forecast_parquet_and_gluonts_arrow_in_parquet_out(start, tmp_path, capsys):
    from chronos_moe.data import write_arrow

    sales_frame().to_parquet(tmp_path / "sales.parquet", index=False)
    status, _, err = run_cli(
        capsys, "forecast", "--model", start, "--data", tmp_path / "sales.parquet",
        "--prediction-length", 2, "--output", tmp_path / "f.parquet",
    )  # fmt: skip
    assert status == 0, err
    written = pd.read_parquet(tmp_path / "f.parquet")
    assert len(written) == 6 and written.columns[-1] == "0.9"
    assert written["predictions"].dtype == np.float32

    arrow = write_arrow(
        [np.arange(20.0), np.ones(9)], tmp_path / "g.arrow", start="2024-05-01", freq="D"
    )
    status, _, err = run_cli(
        capsys, "forecast", "--model", start, "--data", arrow, "--prediction-length", 2,
        "--output", tmp_path / "g.csv",
    )  # fmt: skip
    assert status == 0, err
    written = pd.read_csv(tmp_path / "g.csv")
    assert written["item_id"].tolist() == [0, 0, 1, 1]  # row numbers: the file has no ids
    assert written["timestamp"].tolist() == ["2024-05-21", "2024-05-22", "2024-05-10", "2024-05-11"]


def test_forecast_refuses_to_overwrite_without_overwrite(start, tmp_path, capsys):
    sales_frame(num_series=1).to_csv(tmp_path / "sales.csv", index=False)
    output = tmp_path / "f.csv"
    output.write_text("keep me")
    argv = ["forecast", "--model", start, "--data", tmp_path / "sales.csv",
            "--prediction-length", 2, "--output", output]  # fmt: skip
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and "exists; pass --overwrite" in err and output.read_text() == "keep me"
    status, _, err = run_cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert output.read_text().startswith("item_id,timestamp,target_name,predictions,0.1")


def test_forecast_bad_data_is_named_and_nothing_is_written(start, tmp_path, capsys, monkeypatch):
    from chronos_moe import pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(pipeline.ChronosPipeline, "from_pretrained", no_model)
    frame = sales_frame(num_series=2, length=10)
    cases = {
        "no-target.csv": (frame.drop(columns="target"), r"missing column(s) ['target']"),
        "text.csv": (frame.assign(target="unknown"), "field 'target': expected a numeric column"),
        "twice.csv": (pd.concat([frame, frame.iloc[:1]]), "duplicate (id, timestamp)"),
        "gaps.csv": (frame.drop(index=[3]), "cannot infer the frequency of series 'store_0'"),
    }
    for name, (data, message) in cases.items():
        data.to_csv(tmp_path / name, index=False)
        status, out, err = run_cli(
            capsys, "forecast", "--model", start, "--data", tmp_path / name,
            "--prediction-length", 2, "--output", tmp_path / "f.csv",
        )  # fmt: skip
        assert status == 2 and out == "", err
        (line,) = err.splitlines()
        assert line.startswith("chronos-moe forecast: error: ") and message in line, line
        assert line.startswith(f"chronos-moe forecast: error: {tmp_path / name}: ")
    frame.to_csv(tmp_path / "sales.csv", index=False)
    status, _, err = run_cli(
        capsys, "forecast", "--model", start, "--data", tmp_path / "sales.csv",
        "--prediction-length", 2, "--output", tmp_path / "f.csv", "--freq", "fortnightly",
    )  # fmt: skip
    assert status == 2 and "error: argument --freq: `freq` must be a pandas frequency" in err
    (tmp_path / "empty.csv").write_text("")
    status, _, err = run_cli(
        capsys, "forecast", "--model", start, "--data", tmp_path / "empty.csv",
        "--prediction-length", 2, "--output", tmp_path / "f.csv",
    )  # fmt: skip
    assert status == 2 and "empty.csv: cannot read it as CSV" in err
    assert not (tmp_path / "f.csv").exists()


def pd_concat(*frames):
    return pd.concat(frames)


def test_forecast_shows_a_progress_bar_on_a_terminal(start, tmp_path, capsys, monkeypatch):
    import sys

    sales_frame().to_csv(tmp_path / "sales.csv", index=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, out, err = run_cli(
        capsys, "forecast", "--model", start, "--data", tmp_path / "sales.csv",
        "--prediction-length", 2, "--output", tmp_path / "f.csv", "--batch-size", 2,
    )  # fmt: skip
    assert status == 0, err
    assert "3/3" in out


@pytest.mark.parametrize(
    "config_changes, space, message",
    [
        ({"num_experts": 4}, {"num_active_experts": {"type": "int", "low": 5, "high": 6}},
         "`num_active_experts` (top_k) must be <= `num_experts` in every trial"),
        ({}, {"num_experts": {"type": "int", "low": 3, "high": 1}},
         "`num_experts`: `low` must be <= `high`. Received: low=3, high=1"),
        ({}, {"top_k": {"type": "int", "low": 1, "high": 2}},
         "the experts' top_k is `num_active_experts`"),
        ({"num_active_experts": 5}, None,
         "`num_active_experts` must be <= `num_experts`. Received: num_active_experts=5"),
        ({"use_moe": False}, {"num_experts": {"type": "int", "low": 2, "high": 3}},
         "the base config is dense"),
        ({"validation_data_paths": ["missing.arrow"]}, None, "missing.arrow does not exist"),
    ],
)  # fmt: skip
def test_tune_bad_input_is_named_before_any_model_work(
    config_changes, space, message, start, tmp_path, capsys
):
    """A bad search space or base config: exit status 2, one line, nothing written."""
    data, test = make_data(tmp_path)
    base = small_config(start, data, tmp_path / "run", use_moe=True).to_dict()
    base.update(validation_data_paths=[str(test)])
    base.update(config_changes)
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    argv = ["tune", "--config", config, "--trials", "2", "--output-dir", tmp_path / "study"]
    if space is not None:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        argv += ["--search-space", tmp_path / "space.yaml"]
    before = sorted(p.name for p in tmp_path.iterdir())
    started = time.perf_counter()
    status, out, err = run_cli(capsys, *argv)
    assert status == 2, err
    (line,) = err.splitlines()
    assert line.startswith("chronos-moe tune: error: ") and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert time.perf_counter() - started < 2.0


def test_tune_refuses_a_directory_of_something_else(start, tmp_path, capsys):
    data, test = make_data(tmp_path)
    config = small_config(start, data, tmp_path / "run", use_moe=True)
    path = write_config(tmp_path / "base.yaml", config.replace(validation_data_paths=[str(test)]))
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "notes.md").write_text("mine")
    status, _, err = run_cli(
        capsys, "tune", "--config", path, "--trials", "1", "--output-dir", tmp_path / "study"
    )
    assert status == 2 and "something other than a tuning study (notes.md)" in err
    assert [p.name for p in (tmp_path / "study").iterdir()] == ["notes.md"]
