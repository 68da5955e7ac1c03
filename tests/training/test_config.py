"""TrainingConfig: YAML reading, the reference script's defaults, and errors that name the key."""

import re
from importlib import resources

import pytest
import yaml

from chronos_moe.training.compare import SAMPLE_CONFIGS, sample_config
from chronos_moe.training.config import ConfigError, TrainingConfig

DATA = {"training_data_paths": ["a.arrow"]}


def write_yaml(tmp_path, values, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def test_defaults_are_the_reference_training_scripts():
    config = TrainingConfig(**DATA)
    assert (config.context_length, config.prediction_length, config.min_past) == (512, 64, 64)
    assert (config.per_device_train_batch_size, config.learning_rate) == (32, 1e-3)
    assert (config.lr_scheduler_type, config.warmup_ratio, config.max_steps) == (
        "linear",
        0,
        200_000,
    )
    assert (config.n_tokens, config.initializer_factor) == (4096, 0.05)
    assert config.tokenizer_kwargs == {"low_limit": -15.0, "high_limit": 15.0}


def test_yaml_round_trip(tmp_path):
    values = {**DATA, "probability": [1.0], "use_moe": True, "num_experts": 8, "backend": "jax"}
    config = TrainingConfig.from_yaml(write_yaml(tmp_path, values))
    assert (config.use_moe, config.num_experts, config.backend) == (True, 8, "jax")
    again = TrainingConfig.from_yaml(
        write_yaml(tmp_path, yaml.safe_load(config.to_yaml()), "b.yaml")
    )
    assert again == config


@pytest.mark.parametrize("name", SAMPLE_CONFIGS)
def test_sample_configs_validate(name):
    config = sample_config(name)
    assert config.model_size == "tiny"
    assert config.use_moe == ("moe" in name)


def test_the_bolt_sample_config_validates_and_gives_a_bolt_chronos_config():
    config = TrainingConfig.from_yaml(
        resources.files("chronos_moe.configs").joinpath("chronos-bolt-tiny-sample.yaml")
    )
    assert (config.model_family, config.model_size) == ("bolt", "tiny")
    assert config.chronos_config == {
        "context_length": 512,
        "prediction_length": 64,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "use_reg_token": True,
    }


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"model_family": "chronos2"}, "`model_family` must be one of 't5', 'bolt'"),
        ({"model_family": "bolt", "n_tokens": 4096}, r"\['n_tokens'\] apply to Chronos T5"),
        ({"model_family": "bolt", "top_k": 5, "temperature": 1.0}, r"\['temperature', 'top_k'\]"),
        ({"quantiles": [0.1, 0.9]}, r"\['quantiles'\] apply to Chronos-Bolt models only"),
        ({"model_family": "bolt", "quantiles": [0.0, 0.5]}, r"quantiles.*in \(0, 1\)"),
        ({"model_family": "bolt", "quantiles": [0.5, 1.5]}, r"quantiles.*in \(0, 1\)"),
        ({"model_family": "bolt", "input_patch_size": 0}, "input_patch_size"),
    ],
)
def test_model_family_errors_name_the_keys(tmp_path, values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainingConfig.from_yaml(write_yaml(tmp_path, {**DATA, **values}))


def test_an_unknown_key_is_an_error_naming_it(tmp_path):
    path = write_yaml(tmp_path, {**DATA, "learning_rat": 0.1})
    with pytest.raises(ConfigError, match=r"Unknown config key\(s\) \['learning_rat'\]") as info:
        TrainingConfig.from_yaml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("context_length", "512"),
        ("context_length", 512.0),
        ("use_moe", "yes"),
        ("use_moe", 1),
        ("learning_rate", "1e-3"),
        ("training_data_paths", "a.arrow"),
        ("probability", ["1.0"]),
        ("lr_scheduler_type", "step"),
        ("backend", "tensorflow"),
        ("tokenizer_kwargs", {"low_limit": "a"}),
    ],
)
def test_a_wrong_type_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"`{key}` must be of type .*Received: {key}="):
        TrainingConfig(**{**DATA, key: value})


def test_integers_are_accepted_where_floats_are_expected():
    config = TrainingConfig(**DATA, learning_rate=1, probability=[1])
    assert config.learning_rate == 1


@pytest.mark.parametrize(
    "values, pattern",
    [
        ({"probability": [0.5, 0.5]}, r"one entry per training data path: 1 paths, 2 prob"),
        (
            {"training_data_paths": ["a", "b"], "probability": [0.5, 0.6]},
            r"`probability` must be numbers that sum to 1",
        ),
        ({"probability": [-1.0]}, r"`probability` must be finite numbers >= 0"),
        ({"training_data_paths": []}, r"`training_data_paths` must be a non-empty list"),
        ({"context_length": 0}, r"`context_length` must be a positive integer. Received: "),
        ({"min_past": 0}, r"`min_past` must be an integer >= 1"),
        ({"learning_rate": -1.0}, r"`learning_rate` must be a finite number > 0"),
        ({"max_grad_norm": float("inf")}, r"`max_grad_norm` must be a finite number >= 0"),
        ({"warmup_ratio": 1.5}, r"`warmup_ratio` must be a number in \[0, 1\]"),
        ({"max_missing_prop": -0.1}, r"`max_missing_prop` must be a number in \[0, 1\]"),
        ({"top_p": 0.0}, r"`top_p` must be a number in \(0, 1\]"),
        ({"num_experts": 2, "num_active_experts": 3}, r"`num_active_experts` must be <="),
        ({"num_experts": 0}, r"`num_experts` must be a positive integer. Received: num_experts=0"),
        (
            {"load_balancing_mode": "aux_free"},
            r"`load_balancing_mode` must be of type Literal\['loss', 'bias', 'loss_and_bias'\]\. "
            r"Received: load_balancing_mode='aux_free'",
        ),
        (
            {"load_balancing_window": 0},
            r"`load_balancing_window` must be a positive integer. "
            r"Received: load_balancing_window=0",
        ),
        ({"bias_update_rate": 0.0}, r"`bias_update_rate` must be a finite number > 0. Received"),
        (
            {"moe_level": "layer"},
            r"`moe_level` must be of type Literal\['series', 'token'\]\. "
            r"Received: moe_level='layer'",
        ),
        ({"moe_every": 0}, r"`moe_every` must be a positive integer. Received: moe_every=0"),
        ({"shared_expert": "yes"}, r"`shared_expert` must be of type bool"),
        ({"bias_update_rate": -1e-3}, r"Received: bias_update_rate=-0.001"),
        ({"model_id": "my/model", "random_init": True}, r"must name a size preset"),
        ({"save_total_limit": 0}, r"`save_total_limit` must be an integer >= 1 or null"),
    ],
)
def test_bad_values_are_errors_naming_the_key(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainingConfig(**{**DATA, **values})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file"):
        TrainingConfig.from_yaml(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("training_data_paths: [a.arrow\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        TrainingConfig.from_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(
        ConfigError, match=re.escape("is a mapping of keys to values. Received: list")
    ):
        TrainingConfig.from_yaml(listing)


def test_model_size_and_chronos_config():
    config = TrainingConfig(**DATA, model_id="google/t5-efficient-mini", context_length=128)
    assert config.model_size == "mini"
    assert TrainingConfig(**DATA, model_id="small").model_size == "small"
    assert TrainingConfig(**DATA, model_id="some/dir", random_init=False).model_size is None
    chronos = config.chronos_config
    assert (chronos["context_length"], chronos["n_tokens"]) == (128, 4096)
