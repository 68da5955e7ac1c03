"""`train`: a run from a config writes its final model, logs and checkpoints, and
a run stopped and resumed logs the losses of an uninterrupted one.

Each `train` call compiles a train step (seconds on JAX), so the runs that several
tests read are made once per module."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import chronos_moe
from chronos_moe import backend
from chronos_moe.training import checkpoint, run
from chronos_moe.training.config import ConfigError
from chronos_moe.training.run import RunError, build_optimizer, train
from chronos_moe.training.state import TrainingRun
from tests.training.helpers import PREDICTION_LENGTH, small_config


@pytest.fixture(scope="module")
def config(start_checkpoint, bolt_start_checkpoint, data_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")

    def make(name="run", **overrides):
        bolt = overrides.get("model_family") == "bolt"
        start = bolt_start_checkpoint if bolt else start_checkpoint
        return small_config(start, data_files[0], folder / name, **overrides)

    return make


@pytest.fixture(scope="module")
def moe_run(config):
    """Six MoE steps, logged every step, checkpoints at 2, 4 and 6."""
    return train(config("moe", use_moe=True, max_steps=6), verbose=False)


@pytest.fixture(scope="module")
def bolt_run(config):
    """Six steps of a Chronos-Bolt with series-level experts (quantile loss + balance
    loss), logged every step, checkpoints at 2, 4 and 6. (A dense Bolt trains through
    the same run: the docs' `fit` example and tests/models/test_quantile_loss.py.)"""
    return train(config("bolt", model_family="bolt", use_moe=True, max_steps=6), verbose=False)


@pytest.fixture(scope="module")
def dense_run(config):
    """Four dense steps, logged every step, checkpoints at 2 and 4."""
    return train(config("dense"), verbose=False)


def _read_csv(path):
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_a_run_writes_final_model_config_and_logs(moe_run, config):
    output = moe_run.output_dir
    # Logs: every step (log_steps=1), the documented columns, CSV equal to JSON.
    rows = _read_csv(output / "log.csv")
    assert list(rows[0]) == list(run.LOG_COLUMNS)
    assert rows == json.loads((output / "log.json").read_text()) == moe_run.log
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(row["ce_loss"]) and row["lb_loss"] > 0 for row in rows)
    seconds = [row["seconds"] for row in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    # The linear schedule: the rate used at step s is 1e-3 * (1 - (s - 1) / 6).
    expected_lr = [1e-3 * (1 - s / 6) for s in range(6)]
    np.testing.assert_allclose([row["lr"] for row in rows], expected_lr, rtol=1e-6)
    # The resolved config, the checkpoints every save_steps.
    assert chronos_moe.TrainingConfig.from_yaml(output / "config.yaml") == config(
        "moe", use_moe=True, max_steps=6
    )
    assert [s for s, _ in checkpoint.list_checkpoints(output / "checkpoints")] == [2, 4, 6]
    # The final model: Hugging Face layout and .keras, both giving the trained model's logits.
    batch = run.build_dataset(config(use_moe=True), mode="validation")[0]
    expected = keras.ops.convert_to_numpy(moe_run.model(batch)["logits"])
    pipeline = chronos_moe.ChronosPipeline.from_pretrained(moe_run.final_dir)
    assert isinstance(pipeline.model, chronos_moe.ChronosMoE)
    reloaded = chronos_moe.load_model(moe_run.final_dir / "model.keras")
    for model in (pipeline.model, reloaded):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(batch)["logits"]), expected, rtol=1e-5, atol=1e-5
        )
    forecast = pipeline.predict(np.arange(30.0), prediction_length=PREDICTION_LENGTH)
    assert forecast.shape == (1, 20, PREDICTION_LENGTH)
    # No temporary file is left anywhere.
    assert not [p for p in output.rglob("*") if ".tmp" in p.name]


def test_a_dense_run_logs_no_balance_loss(dense_run):
    assert isinstance(dense_run.model, chronos_moe.ChronosT5)
    assert all(np.isnan(row["lb_loss"]) for row in dense_run.log)
    assert all(row["ce_loss"] == row["loss"] for row in dense_run.log)


def test_a_bolt_run_writes_a_bolt_checkpoint_that_forecasts(bolt_run, config):
    # The `ce_loss` column holds the forecasting loss the model logs (`quantile_loss`):
    # the total adds the weighted balance loss.
    assert all(np.isfinite(row["ce_loss"]) and row["lb_loss"] > 0 for row in bolt_run.log)
    assert all(row["loss"] > row["ce_loss"] for row in bolt_run.log)
    batch = run.build_dataset(config(model_family="bolt"), mode="validation")[0]
    assert sorted(batch) == ["context", "target"]
    expected = keras.ops.convert_to_numpy(bolt_run.model(batch)["quantiles"])
    pipeline = chronos_moe.ChronosPipeline.from_pretrained(bolt_run.final_dir)
    assert isinstance(pipeline, chronos_moe.ChronosBoltPipeline)
    assert isinstance(pipeline.model, chronos_moe.ChronosBoltMoE)
    reloaded = chronos_moe.load_model(bolt_run.final_dir / "model.keras")
    for model in (pipeline.model, reloaded):
        ours = keras.ops.convert_to_numpy(model(batch)["quantiles"])
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    forecast = pipeline.predict(batch["context"])
    np.testing.assert_allclose(forecast, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["t5", "bolt"])
def test_stop_and_resume_equals_an_uninterrupted_run(family, request, config, monkeypatch):
    # `moe_run` (T5 MoE) or `bolt_run` again, logged every 2 steps (log rows average
    # the steps since the last row); it dies in step 5, after its step-4 checkpoint,
    # leaving a torn save.
    kind = {"t5": dict(use_moe=True), "bolt": dict(use_moe=True, model_family="bolt")}[family]
    uninterrupted = request.getfixturevalue("moe_run" if family == "t5" else "bolt_run")
    stopped = config(f"stopped-{family}", max_steps=6, log_steps=2, **kind)
    checkpoints = Path(stopped.output_dir) / "checkpoints"
    torn = checkpoints / "step-5.tmp-0badbeef"
    real_before_step = TrainingRun.before_step

    def dying(self):
        if self.step == 4:  # as step 5 begins
            torn.mkdir(exist_ok=True)
            raise KeyboardInterrupt
        real_before_step(self)

    monkeypatch.setattr(TrainingRun, "before_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(stopped, verbose=False)
    monkeypatch.undo()
    assert [s for s, _ in checkpoint.list_checkpoints(checkpoints)] == [2, 4]
    assert [row["step"] for row in _read_csv(Path(stopped.output_dir) / "log.csv")] == [2, 4]

    resumed = train(stopped, resume=True, verbose=False)
    assert not torn.exists()
    assert [row["step"] for row in resumed.log] == [2, 4, 6]
    for k, row in enumerate(resumed.log):  # the mean of the uninterrupted run's two steps
        for key in ("loss", "ce_loss", "lb_loss", "lr"):
            expected = np.mean([r[key] for r in uninterrupted.log[2 * k : 2 * k + 2]])
            np.testing.assert_allclose(row[key], expected, rtol=1e-6, err_msg=key)
    for mine, theirs in zip(resumed.model.weights, uninterrupted.model.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs), atol=1e-6
        )
    # The same batches: the data streams of the two final checkpoints are in one state.
    states = [
        json.loads((r.output_dir / "checkpoints" / "step-6" / "trainer_state.json").read_text())
        for r in (resumed, uninterrupted)
    ]
    assert states[0]["data"] == states[1]["data"]


def test_an_output_directory_of_another_run_is_refused(dense_run, config):
    # (`--overwrite` replacing it is tested through the command line, tests/test_cli.py.)
    before = (dense_run.output_dir / "log.csv").read_text()
    with pytest.raises(RunError, match="already holds files of another run. Use --resume"):
        train(config("dense"), verbose=False)
    assert (dense_run.output_dir / "log.csv").read_text() == before


def test_resume_errors(dense_run, config):
    with pytest.raises(RunError, match="--resume: no complete checkpoint"):
        train(config("empty"), resume=True, verbose=False)
    changed = config("dense", context_length=12)
    with pytest.raises(RunError, match=r"config changed.*context_length: 16 -> 12"):
        train(changed, resume=True, verbose=False)
    assert dense_run.output_dir == Path(changed.output_dir)


def test_a_config_for_another_backend_is_refused(config):
    other = "jax" if backend.BACKEND == "torch" else "torch"
    with pytest.raises(RunError, match=f"asks for backend '{other}'"):
        train(config("other", backend=other), verbose=False)


def test_a_moe_checkpoint_cannot_start_moe_training(moe_run, config):
    with pytest.raises(ConfigError, match="already a ChronosMoE model"):
        train(config("again", model_id=str(moe_run.final_dir), use_moe=True), verbose=False)


def test_mixed_precision_trains_and_restores_the_policy(config):
    result = train(config("mixed", mixed_precision=True, max_steps=2), verbose=False)
    assert np.isfinite([row["ce_loss"] for row in result.log]).all()
    assert result.model.dtype_policy.name == run.MIXED_PRECISION_POLICY
    assert keras.mixed_precision.global_policy().name == "float32"


def test_gradient_clipping_and_schedule_follow_the_config(config):
    optimizer = build_optimizer(config(max_grad_norm=0.5, warmup_ratio=0.5))
    assert optimizer.global_clipnorm == 0.5
    assert float(optimizer.learning_rate) == 0.0  # warm-up starts at 0
    assert build_optimizer(config(max_grad_norm=0.0)).global_clipnorm is None


def test_a_random_init_run_starts_from_a_size_preset(config):
    model = run.build_model(config(random_init=True, model_id="tiny"))
    assert (model.d_model, len(model.encoder_blocks), model.vocab_size) == (256, 4, 64)


def test_a_collapsing_router_is_warned_about_per_logging_window(config):
    # 3 experts, 2 per series: some expert receives at least 2/3 of the series in any
    # window, so a limit of 0.6 must warn once per logged window, and 1.0 never can.
    from chronos_moe.moe.balancing import ExpertCollapseWarning

    with pytest.warns(ExpertCollapseWarning) as caught:
        result = train(
            config("collapse", use_moe=True, max_steps=2, max_expert_share=0.6), verbose=False
        )
    messages = [str(w.message) for w in caught if w.category is ExpertCollapseWarning]
    assert len(messages) == len(result.log) == 2
    assert "of the series in steps 1-1" in messages[0]
    assert "of the series in steps 2-2" in messages[1]


def test_max_expert_share_must_be_a_share():
    with pytest.raises(ConfigError, match="max_expert_share"):
        small_config(Path("start"), Path("data.arrow"), Path("out"), max_expert_share=0.0)


def test_a_token_level_run_trains_and_writes_a_token_level_model(config):
    from chronos_moe.checkpoints import load_chronos

    result = train(
        config("token", use_moe=True, moe_level="token", moe_every=2, max_steps=2), verbose=False
    )
    assert all(np.isfinite(row["ce_loss"]) and row["lb_loss"] > 0 for row in result.log)
    model = load_chronos(result.final_dir)
    assert model.level == "token" and model.moe_every == 2
    assert len(model.token_layers) == len(result.model.token_layers) > 0
