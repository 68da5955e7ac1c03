"""The search space: its checks (before any model is built) and its sampling."""

import dataclasses

import optuna
import pytest
import yaml

from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.tuning.search_space import (
    SearchSpace,
    SearchSpaceError,
    default_search_space,
)

BASE = TrainingConfig(training_data_paths=["a.arrow"], use_moe=True, num_experts=4)


def test_search_space_errors_are_config_errors():
    assert issubclass(SearchSpaceError, ConfigError)


def test_top_k_above_every_number_of_experts_is_refused():
    space = SearchSpace.from_dict(
        {
            "num_experts": {"type": "int", "low": 2, "high": 4},
            "num_active_experts": {"type": "int", "low": 3, "high": 4},
        }
    )
    with pytest.raises(SearchSpaceError, match=r"`num_active_experts` \(top_k\) must be <= "):
        space.check(BASE)


def test_top_k_above_the_base_configs_experts_is_refused():
    space = SearchSpace.from_dict({"num_active_experts": {"type": "int", "low": 5, "high": 6}})
    with pytest.raises(SearchSpaceError, match="num_experts >= 4"):
        space.check(BASE)


def test_experts_below_the_base_top_k_are_cut_not_refused():
    space = SearchSpace.from_dict({"num_experts": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(SearchSpaceError, match="num_experts >= 1"):
        space.check(BASE)  # base top_k 2 > 1 expert
    space.check(BASE.replace(num_active_experts=1))


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"top_k": {"type": "int", "low": 1, "high": 2}},
            r"\[.top_k.\] \(the experts. top_k is `num_active",
        ),
        ({"num_expert": {"type": "int", "low": 1, "high": 2}}, "Did you mean `num_experts`"),
        ({"output_dir": {"type": "categorical", "choices": ["a"]}}, "Unknown search space"),
        ({"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}}, "`low` must be <="),
        ({"learning_rate": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log-scale"),
        ({"num_experts": {"type": "int", "low": 2.5, "high": 4}}, "finite integer"),
        ({"num_experts": {"type": "uniform", "low": 2, "high": 4}}, "`type` must be one of"),
        ({"num_experts": {"type": "int", "low": 2, "hi": 4}}, r"unknown field\(s\) \['hi'\]"),
        ({"load_balancing_mode": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"num_experts": [2, 4]}, "must be a mapping"),
        ({}, "non-empty mapping"),
    ],
)
def test_bad_spaces_are_named(values, message):
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict(values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"load_balancing_weight": {"type": "float", "low": -1.0, "high": 1.0}}, "load_balancing"),
        ({"load_balancing_mode": {"type": "categorical", "choices": ["loss", "lb"]}}, "Received"),
        ({"router_hidden_dim": {"type": "int", "low": 0, "high": 8}}, "positive integer"),
    ],
)
def test_range_ends_the_config_refuses_are_named(values, message):
    with pytest.raises(SearchSpaceError, match=f"search space `{next(iter(values))}`.*{message}"):
        SearchSpace.from_dict(values).check(BASE)


def test_moe_keys_on_a_dense_base_are_refused():
    with pytest.raises(SearchSpaceError, match="the base config is dense"):
        SearchSpace.default().check(BASE.replace(use_moe=False))


def test_the_default_space_fits_the_config_schema():
    space = default_search_space()
    assert space["load_balancing_weight"] == {
        "type": "float",
        "low": 1e-4,
        "high": 1e-1,
        "log": True,
    }
    keys = {field.name for field in dataclasses.fields(TrainingConfig)}
    # The experts' level is sampled exactly when the config schema knows it.
    assert ("moe_level" in space) == ("moe_level" in keys)
    SearchSpace.default(BASE).check(BASE)
    assert list(default_search_space(BASE.replace(use_moe=False))) == ["learning_rate"]


def test_a_space_reads_from_yaml_and_names_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"num_active_experts": {"type": "int", "low": 1, "high": 2}}))
    assert SearchSpace.from_yaml(path).to_dict()["num_active_experts"]["high"] == 2
    path.write_text("num_experts: {type: int, low: 4, high: 2}\n")
    with pytest.raises(SearchSpaceError, match=f"{path}: `num_experts`: `low` must be"):
        SearchSpace.from_yaml(path)


def test_top_k_never_exceeds_the_trials_experts():
    space = SearchSpace.from_dict(
        {
            "num_active_experts": {"type": "int", "low": 1, "high": 4},
            "num_experts": {"type": "int", "low": 1, "high": 4},
        }
    )
    base = BASE.replace(num_active_experts=1)
    space.check(base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(30):
        values = space.suggest(study.ask(), base)
        base.replace(**values)  # a valid config
        drawn.append((values["num_experts"], values["num_active_experts"]))
    assert all(k <= n for n, k in drawn)
    assert {n for n, _ in drawn} == {1, 2, 3, 4}
