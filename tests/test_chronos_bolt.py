"""ChronosBolt and ResidualBlock as Keras objects, and the errors of the Bolt
config, checkpoints and pipeline (parity with the reference: test_parity_bolt.py)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe.checkpoints import CheckpointError, load_chronos, save_chronos
from chronos_moe.config import ChronosBoltConfig
from chronos_moe.layers.residual_block import ResidualBlock
from chronos_moe.models.chronos_bolt import ChronosBolt, instance_norm, patches
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
from chronos_moe.saving import load_model

BOLT_CONFIG = {
    "context_length": 32,
    "prediction_length": 4,
    "input_patch_size": 8,
    "input_patch_stride": 8,
    "quantiles": [0.1, 0.5, 0.9],
    "use_reg_token": True,
}


def small_bolt(**chronos) -> ChronosBolt:
    keras.utils.set_random_seed(0)
    return ChronosBolt(
        d_model=24,
        d_kv=8,
        d_ff=40,
        num_layers=1,
        num_heads=3,
        chronos_config={**BOLT_CONFIG, **chronos},
    )


def context(batch: int = 2, length: int = 20) -> np.ndarray:
    values = np.random.default_rng(0).normal(3.0, 2.0, (batch, length)).astype("float32")
    values[0, :5] = np.nan
    return values


# ---- the model -------------------------------------------------------------------


def test_forecast_shape_and_trainable_weights():
    model = small_bolt()
    forecast = model({"context": context()})
    assert tuple(forecast.shape) == (2, 3, 4)
    # shared (2 rows), 2 residual blocks × 3 dense (kernel + bias), encoder 1 block
    # (q k v o, 2 norms, wi wo) + bias table + final norm, decoder 1 block (+ cross
    # q k v o and its norm) + bias table + final norm.
    assert len(model.trainable_weights) == 1 + 12 + (8 + 2) + (13 + 2)


def test_config_round_trip_gives_the_same_forecasts():
    model = small_bolt()
    config = json.loads(json.dumps(model.get_config()))
    clone = ChronosBolt.from_config(config)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone({"context": context()})),
        ops.convert_to_numpy(model({"context": context()})),
    )


def test_keras_file_round_trip(tmp_path):
    model = small_bolt(use_reg_token=False)
    model.save(tmp_path / "bolt.keras")
    loaded = load_model(tmp_path / "bolt.keras")
    assert isinstance(loaded, ChronosBolt) and loaded.vocab_size == 1
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded({"context": context()})),
        ops.convert_to_numpy(model({"context": context()})),
    )


def test_a_longer_context_reads_only_the_last_context_length_steps():
    model = small_bolt()
    long = context(length=50)
    np.testing.assert_allclose(
        ops.convert_to_numpy(model({"context": long})),
        ops.convert_to_numpy(model({"context": long[:, -32:]})),
        rtol=1e-6,
    )


def test_instance_norm_of_missing_and_constant_series():
    values = np.array([[np.nan, np.nan, np.nan], [2.0, 2.0, np.nan], [1.0, 3.0, np.nan]], "float32")
    scaled, loc, scale = instance_norm(values, ~np.isnan(values))
    np.testing.assert_allclose(ops.convert_to_numpy(loc)[:, 0], [0.0, 2.0, 2.0])
    np.testing.assert_allclose(ops.convert_to_numpy(scale)[:, 0], [1.0, 1e-5, 1.0])
    np.testing.assert_allclose(ops.convert_to_numpy(scaled)[2], [-1.0, 1.0, np.nan])


def test_patches_are_torch_unfold_after_left_padding():
    torch = pytest.importorskip("torch")
    values = np.arange(10, dtype="float32")[None]
    for size, stride in ((4, 4), (4, 2), (3, 1)):
        pad = -values.shape[1] % size
        padded = torch.cat([torch.full((1, pad), -1.0), torch.tensor(values)], dim=-1)
        expected = padded.unfold(-1, size, stride).numpy()
        ours = ops.convert_to_numpy(patches(ops.convert_to_tensor(values), size, stride, -1.0))
        np.testing.assert_array_equal(ours, expected)


def test_residual_block_layer_contract(tmp_path):
    block = ResidualBlock(intermediate_dim=6, output_dim=5, use_layer_norm=True, name="block")
    inputs = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    outputs = ops.convert_to_numpy(block(inputs))
    assert outputs.shape == (2, 3, 5) and len(block.trainable_weights) == 7
    clone = ResidualBlock.from_config(json.loads(json.dumps(block.get_config())))
    clone(inputs)
    clone.set_weights(block.get_weights())
    np.testing.assert_array_equal(ops.convert_to_numpy(clone(inputs)), outputs)
    with pytest.raises(
        ValueError, match="`activation` must be one of .* Received: activation='tanh'"
    ):
        ResidualBlock(4, 4, activation="tanh")


# ---- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_tokens": 4096}, r"Unknown keys in the Chronos-Bolt chronos_config: \['n_tokens'\]"),
        (
            {"quantiles": [0.0, 0.5]},
            r"`quantiles` must be .* numbers in \(0, 1\).*Received: quantiles=\[0.0, 0.5\]",
        ),
        ({"quantiles": [0.5, 1.5]}, r"in \(0, 1\).*Received: quantiles=\[0.5, 1.5\]"),
        (
            {"quantiles": [0.9, 0.1]},
            r"`quantiles` must be increasing.*Received: quantiles=\[0.9, 0.1\]",
        ),
        ({"quantiles": []}, r"non-empty"),
        (
            {"input_patch_size": 0},
            r"`input_patch_size` must be a positive integer. Received: input_patch_size=0",
        ),
        (
            {"use_reg_token": "yes"},
            r"`use_reg_token` must be a bool. Received: use_reg_token='yes'",
        ),
    ],
)
def test_bad_bolt_configs_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        ChronosBoltConfig.from_dict({**BOLT_CONFIG, **change})


def test_a_bolt_checkpoint_with_unknown_keys_is_refused(tmp_path):
    directory = save_chronos(small_bolt(), tmp_path / "bolt")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["chronos_config"]["patch_overlap"] = 2
    path.write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"Unknown keys in the Chronos-Bolt .*\['patch_overlap'\]"
    ):
        load_chronos(directory)


def test_a_bolt_checkpoint_with_the_wrong_weights_is_refused(tmp_path):
    directory = save_chronos(small_bolt(), tmp_path / "bolt")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["chronos_config"]["prediction_length"] = 5  # the head holds 3 × 4 outputs
    path.write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match="output_patch_embedding.output_layer.weight: expected"
    ):
        load_chronos(directory)


def test_bolt_and_t5_pipelines_refuse_each_others_models(tmp_path):
    bolt = small_bolt()
    with pytest.raises(TypeError, match="Received: ChronosBolt .forecast with ChronosBoltPipeline"):
        ChronosPipeline(bolt)
    t5 = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, chronos_config={"n_tokens": 64})
    with pytest.raises(
        TypeError, match="must be a ChronosBolt or ChronosBoltMoE model. Received: ChronosT5"
    ):
        ChronosBoltPipeline(t5)
    save_chronos(t5, tmp_path / "t5")
    with pytest.raises(
        CheckpointError, match="Expected a Chronos-Bolt checkpoint. Received: a ChronosT5"
    ):
        ChronosBoltPipeline.from_pretrained(tmp_path / "t5")
    save_chronos(bolt, tmp_path / "bolt")
    with pytest.raises(ValueError, match="Received: compute_dtype='float16'"):
        ChronosPipeline.from_pretrained(tmp_path / "bolt", compute_dtype="float16")


def test_pipeline_arguments_are_checked():
    pipeline = ChronosBoltPipeline(small_bolt())
    with pytest.raises(
        ValueError, match=r"quantile_levels.*\(0, 1\).*Received: quantile_levels=\[0.5, 1.0\]"
    ):
        pipeline.predict_quantiles(context(), quantile_levels=[0.5, 1.0])
    with pytest.raises(ValueError, match="exceeds the model's prediction_length=4"):
        pipeline.predict(context(), prediction_length=5, limit_prediction_length=True)
    with pytest.raises(ValueError, match="Received: prediction_length=0"):
        pipeline.predict(context(), prediction_length=0)
    no_median = ChronosBoltPipeline(small_bolt(quantiles=[0.1, 0.9]))
    with pytest.raises(ValueError, match=r"do not hold 0.5. Received: quantiles=\[0.1, 0.9\]"):
        no_median.predict_quantiles(context())


def test_predict_df_reports_the_median_as_predictions():
    pd = pytest.importorskip("pandas")
    pipeline = ChronosBoltPipeline(small_bolt())
    values = np.sin(np.arange(12.0))
    df = pd.DataFrame(
        {
            "item_id": ["a"] * 12,
            "timestamp": pd.date_range("2024-01-01", periods=12, freq="h"),
            "target": values,
        }
    )
    forecast = pipeline.predict_df(df, prediction_length=3, quantile_levels=[0.1, 0.5])
    quantiles, mean = pipeline.predict_quantiles(values, 3, quantile_levels=[0.1, 0.5])
    np.testing.assert_array_equal(forecast["predictions"].to_numpy(), mean[0])
    np.testing.assert_array_equal(forecast["0.1"].to_numpy(), quantiles[0, :, 0])
    assert forecast["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 12:00")


# ---- code written for ChronosPipeline -------------------------------------------------


def test_seed_is_accepted_and_num_samples_refused():
    pipeline = ChronosBoltPipeline(small_bolt())
    np.testing.assert_array_equal(pipeline.predict(context(), seed=3), pipeline.predict(context()))
    with pytest.raises(ValueError, match="Received: num_samples=5"):
        pipeline.predict_quantiles(context(), num_samples=5)
    with pytest.raises(TypeError, match="Received: seed='a'"):
        pipeline.predict(context(), seed="a")


def test_evaluate_scores_a_bolt_pipeline():
    from chronos_moe.evaluation import evaluate

    series = [np.sin(np.arange(40.0) / 3 + k) + 5 for k in range(4)]
    result = evaluate(ChronosBoltPipeline(small_bolt()), series, 4, seasonality=4, verbose=0)
    assert np.isfinite(result.relative_wql) and np.isfinite(result.relative_mase)


def test_the_forecast_command_reads_a_bolt_checkpoint(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    from chronos_moe import cli

    directory = save_chronos(small_bolt(), tmp_path / "bolt")
    frame = pd.DataFrame(
        {
            "item_id": ["a"] * 20 + ["b"] * 20,
            "timestamp": list(pd.date_range("2024-01-01", periods=20, freq="D")) * 2,
            "target": np.arange(40.0),
        }
    )
    frame.to_csv(tmp_path / "data.csv", index=False)
    output = tmp_path / "forecast.csv"
    argv = ["forecast", "--model", directory, "--data", tmp_path / "data.csv"]
    argv += ["--prediction-length", "3", "--output", output]
    assert cli.main([str(arg) for arg in argv]) == 0, capsys.readouterr().err
    written = pd.read_csv(output)
    expected = ChronosBoltPipeline.from_pretrained(directory).predict_df(frame, prediction_length=3)
    np.testing.assert_allclose(written["predictions"], expected["predictions"], rtol=1e-6)


def test_training_a_bolt_checkpoint_as_t5_is_refused_by_name(tmp_path):
    from chronos_moe.training.config import ConfigError
    from chronos_moe.training.run import build_model
    from tests.training.helpers import make_data, small_config

    directory = save_chronos(small_bolt(), tmp_path / "bolt")
    train, _ = make_data(tmp_path)
    config = small_config(directory, train, tmp_path / "run")
    with pytest.raises(ConfigError, match="is a ChronosBolt checkpoint; set `model_family: bolt`"):
        build_model(config)


@pytest.mark.parametrize(
    "field, value",
    [
        ("feed_forward_proj", 2.5),
        ("feed_forward_proj", "tanh"),
        ("initializer_factor", -3),
        ("initializer_factor", float("nan")),
        ("d_model", "ten"),
        ("num_heads", 0),
        ("decoder_start_token_id", 5),
        (("chronos_config", "context_length"), None),
        (("chronos_config", "quantiles"), {"a": 1}),
        (("chronos_config", "use_reg_token"), [1, 2]),
    ],
)
def test_bad_bolt_config_values_are_named_checkpoint_errors(tmp_path, field, value):
    directory = save_chronos(small_bolt(), tmp_path / "bolt")
    path = directory / "config.json"
    config = json.loads(path.read_text())
    if isinstance(field, tuple):
        config[field[0]][field[1]] = value
    else:
        config[field] = value
    path.write_text(json.dumps(config))
    name = field[1] if isinstance(field, tuple) else field
    with pytest.raises(CheckpointError, match=f"`{name}`.*Received: {name}=") as error:
        load_chronos(directory)
    assert "config.json" in str(error.value)
