"""`benchmarks/quality.py --quick`: the whole study pipeline on tiny data.

The study runs on torch (its `--backend` default; its training and forecasting
paths are tested on both backends elsewhere), so these tests run in the torch
pass of the suite only: the JAX pass would repeat the same torch processes. Real
data comes from small Arrow files written here, so nothing is downloaded.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chronos_moe.data import write_arrow

pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "torch") != "torch",
    reason="the study's processes run on torch; the torch pass of the suite runs them",
)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
_spec = importlib.util.spec_from_file_location("quality", SCRIPT)
quality = importlib.util.module_from_spec(_spec)
sys.modules["quality"] = quality
_spec.loader.exec_module(quality)


def run_study(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "torch", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    yearly = [np.cumsum(rng.normal(size=30)) + 50 for _ in range(5)]
    quarterly = [10 + np.sin(np.arange(60) * np.pi / 2) + rng.normal(size=60) for _ in range(4)]
    write_arrow(yearly, directory / "yearly.arrow", freq="Y")
    write_arrow(quarterly, directory / "quarterly.arrow", freq="QS")
    return directory


@pytest.fixture(scope="module")
def study(tmp_path_factory, real_dir) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("study")
    args = (
        "--output-dir",
        str(output),
        "--quick",
        "--seeds",
        "0",
        "1",
        "--real-data",
        str(real_dir),
    )
    completed = run_study(*args, "--num-samples", "4")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return output, completed


def test_every_variant_and_seed_is_trained_scored_and_reported(study):
    output, _ = study
    results = json.loads((output / "results.json").read_text())
    runs = {(r["variant"], r["seed"]) for r in results["runs"]}
    assert runs == {(v, s) for v in quality.VARIANTS for s in (0, 1)}
    for record in results["runs"]:
        assert set(record["scores"]) == {"synthetic", "real"}
        assert set(record["scores"]["real"]) == {"yearly", "quarterly"}
        assert record["scores"]["real"]["yearly"]["prediction_length"] == 6
        assert record["scores"]["real"]["quarterly"]["prediction_length"] == 8
    report = (output / "report.md").read_text()
    for variant in quality.VARIANTS:
        assert f"| {variant} |" in report
    assert "target ≤ 0.97 beyond the seed spread" in report
    assert "better than Seasonal Naive" in report
    assert (output / "relative_wql.png").stat().st_size > 0
    for variant in ("series-moe", "token-moe"):  # routing reports of the routed models only
        assert (output / "experts" / variant / "report.md").is_file()
    assert not (output / "experts" / "series-control").exists()


def test_summary_is_the_mean_and_spread_of_the_runs(study):
    output, _ = study
    results = json.loads((output / "results.json").read_text())
    dense = [r for r in results["runs"] if r["variant"] == "dense"]
    values = []
    for record in dense:
        scores = record["scores"]["real"]
        ratios = [s["model_wql"] / s["seasonal_naive_wql"] for s in scores.values()]
        values.append(float(np.exp(np.mean(np.log(ratios)))))
    entry = results["summary"]["dense"]["real_wql"]
    np.testing.assert_allclose(entry["values"], values, rtol=1e-12)
    np.testing.assert_allclose(entry["mean"], np.mean(values), rtol=1e-12)
    np.testing.assert_allclose(entry["std"], np.std(values, ddof=1), rtol=1e-12)


def test_controls_match_the_active_parameters_of_their_moe(study):
    output, _ = study
    summary = json.loads((output / "results.json").read_text())["summary"]
    moe, control = summary["token-moe"]["parameters"], summary["token-control"]["parameters"]
    assert moe["total"] > moe["active"]  # 6 of 8 experts idle per token
    assert control["total"] == control["active"]  # nothing routed
    # The same expert width per token; only the router's columns differ (8 vs 1 per block).
    assert abs(moe["active"] - control["active"]) / moe["active"] < 0.01
    assert summary["dense"]["parameters"]["active"] < control["active"]


def test_parameter_counts_count_top_k_of_n_routed_experts():
    import keras

    from chronos_moe import ChronosT5, build_moe_chronos

    keras.utils.set_random_seed(0)
    base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
    dense = quality.parameter_counts(base)
    moe = build_moe_chronos(base, num_experts=4, top_k=1, router_hidden_dim=8, expert_hidden_dim=16)
    counts = quality.parameter_counts(moe)
    expert_sizes = sum(
        int(np.prod(w.shape)) for w in moe.trainable_weights if "/experts/" in w.path
    )
    assert counts["total"] - counts["active"] == expert_sizes * 3 // 4
    assert dense["total"] == dense["active"] == base.count_params()


def test_a_rerun_continues_from_the_finished_runs(study, real_dir):
    output, _ = study
    before = (output / "results.json").read_text()
    completed = run_study(
        "--output-dir", str(output), "--quick", "--seeds", "0", "1", "--real-data", str(real_dir)
    )
    assert completed.returncode == 0, completed.stderr
    assert "==" not in completed.stdout.split("# Quality study")[0]  # nothing trained again
    assert json.loads((output / "results.json").read_text())["runs"] == json.loads(before)["runs"]


def test_bad_input_fails_before_any_training(tmp_path, real_dir):
    completed = run_study("--output-dir", str(tmp_path / "a"), "--quick", "--seeds", "0")
    assert completed.returncode != 0 and "at least 2 seeds" in completed.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    completed = run_study("--output-dir", str(tmp_path / "b"), "--quick", "--real-data", str(empty))
    assert completed.returncode != 0 and "must hold .arrow files" in completed.stderr
    write_arrow([np.arange(40.0)], empty / "weekly.arrow", freq="W")  # horizon 13 > 8
    completed = run_study("--output-dir", str(tmp_path / "c"), "--quick", "--real-data", str(empty))
    assert completed.returncode != 0 and "a horizon of 13" in completed.stderr
    assert not (tmp_path / "c" / "models").exists()
