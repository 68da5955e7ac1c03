"""`chronos_moe.distribution` in this process (one device): the named errors
and the checks a model runs when it is built under a distribution. The
training on eight simulated devices is `tests/distribution/`."""

from __future__ import annotations

import doctest

import keras
import pytest

from chronos_moe import ChronosT5, backend, build_moe_chronos
from chronos_moe import distribution as dist
from chronos_moe.errors import (
    DistributionBackendError,
    DistributionError,
    IndivisibleBatchError,
    IndivisibleExpertsError,
    MeshSizeError,
    ProcessMeshError,
    ProcessSettingsError,
    UnmatchedExpertVariableError,
)
from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.training.run import train
from chronos_moe.validation import check_mesh_shape, check_process_mesh, cluster_settings

jax_only = pytest.mark.skipif(
    not backend.KERAS_DISTRIBUTION,
    reason="keras.distribution is JAX-only in released Keras; on torch the named error is "
    "what is tested (test_torch_refuses_a_distribution)",
)


@pytest.fixture(autouse=True)
def no_distribution_left():
    yield
    if backend.KERAS_DISTRIBUTION:
        keras.distribution.set_distribution(None)


def tiny_base() -> ChronosT5:
    return ChronosT5.from_preset(
        "tiny", vocab_size=32, num_layers=1, d_model=8, d_ff=16, num_heads=2, d_kv=4
    )


def test_mesh_shape_checks_need_no_backend():
    assert check_mesh_shape(4, 2, num_experts=8, batch_size=32) == (4, 2)
    with pytest.raises(IndivisibleExpertsError, match="expert_parallel=3, num_experts=8"):
        check_mesh_shape(1, 3, num_experts=8)
    with pytest.raises(IndivisibleBatchError, match="data_parallel=4, batch_size=6"):
        check_mesh_shape(4, 1, batch_size=6)
    with pytest.raises(ValueError, match="`expert_parallel` must be a positive integer"):
        check_mesh_shape(1, 0)
    assert issubclass(IndivisibleExpertsError, DistributionError)


@pytest.mark.skipif(backend.KERAS_DISTRIBUTION, reason="the torch pass's test (JAX has a mesh)")
def test_torch_refuses_a_distribution():
    for make in (dist.distribute, dist.device_mesh, dist.expert_distribution):
        with pytest.raises(DistributionBackendError, match="JAX only.*DistributedDataParallel"):
            make(1, 1)


@jax_only
def test_a_mesh_larger_than_the_devices_present():
    present = len(keras.distribution.list_devices())
    with pytest.raises(MeshSizeError, match=f"{present + 1} devices needs as many; {present}"):
        dist.device_mesh(present + 1, 1)


@jax_only
def test_the_layout_map_splits_expert_weights_of_both_levels_only():
    layout_map = dist.expert_layout_map(dist.device_mesh(1, 1))
    split = ("expert", None, None)
    for path in (
        "chronos_mo_e/experts/up",
        "chronos_mo_e/experts/down",
        "chronos_mo_e/experts/head",
        "chronos_t5_2/encoder_block_0/feed_forward/wi",
        "chronos_t5/decoder_block_3/feed_forward/wi_1",
        "chronos_t5/decoder_block_0/feed_forward/wo",
    ):
        assert layout_map[path].axes == split, path
    for path in (
        "chronos_t5/encoder_block_0/feed_forward/wi/kernel",  # dense feed-forward
        "chronos_t5/encoder_block_0/feed_forward/shared/wo/kernel",  # shared expert
        "chronos_t5/encoder_block_0/feed_forward/router",
        "chronos_mo_e/router/logits/kernel",
        "chronos_mo_e/router/expert_load",
    ):
        assert layout_map[path] is None, path


@jax_only
@pytest.mark.parametrize("level", ["series", "token"])
def test_models_built_under_the_distribution_pass_the_checks(level):
    distribution = dist.distribute(1, 1, num_experts=4)
    model = build_moe_chronos(tiny_base(), num_experts=4, level=level, router_hidden_dim=8)
    experts = dist.expert_variables(model)
    assert len(experts) == (3 if level == "series" else 4)
    for variable in experts:
        assert distribution.get_variable_layout(variable).axes == ("expert", None, None)
    dist.check_expert_sharding(model, distribution)  # again, explicitly: no error


@jax_only
@pytest.mark.parametrize("level", ["series", "token"])
def test_an_expert_weight_no_rule_matches_is_refused(level):
    layout_map = dist.expert_layout_map(dist.device_mesh(1, 1))
    del layout_map[next(key for key in layout_map if ("experts" in key) == (level == "series"))]
    layout_map[r".*/experts/upp"] = ("expert", None, None)  # a typo matches nothing, silently
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    expected = "experts/up, " if level == "series" else "feed_forward/wi, "
    with pytest.raises(UnmatchedExpertVariableError, match=f"matched no rule.*{expected}"):
        build_moe_chronos(tiny_base(), num_experts=4, level=level, router_hidden_dim=8)


@jax_only
def test_docstring_examples_run():
    result = doctest.testmod(dist, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and result.failed == 0


# The YAML `distribution:` block and the CLI runner.


def config(**changes) -> TrainingConfig:
    values = {"training_data_paths": ["train.arrow"], "use_moe": True, "num_experts": 4}
    return TrainingConfig(**{**values, **changes})


def test_the_config_reads_the_mesh_sizes():
    assert config().mesh_shape is None
    sizes = {"data_parallel": 4, "expert_parallel": 2}
    assert config(distribution=sizes).mesh_shape == (4, 2)
    assert config(distribution={"data_parallel": 8}).mesh_shape == (8, 1)
    assert config(distribution={"expert_parallel": 4}).mesh_shape == (1, 4)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"distribution": {"data_paralel": 2}}, r"Unknown `distribution` key.*data_parallel"),
        ({"distribution": {"expert_parallel": 3}}, "expert_parallel=3, num_experts=4"),
        ({"distribution": {"data_parallel": 5}}, "data_parallel=5, batch_size=32"),
        ({"distribution": {"data_parallel": 0}}, "`data_parallel` must be a positive integer"),
        ({"distribution": {"data_parallel": "2"}}, "`data_parallel` must be a positive integer"),
        ({"distribution": {"data_parallel": 2.0}}, "`distribution` must be of type"),
        ({"distribution": {"expert_parallel": 2}, "use_moe": False}, "this run has none"),
    ],
)
def test_bad_distribution_configs_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        config(**changes)


def test_the_runner_refuses_an_unusable_mesh_before_anything_is_written(tmp_path):
    output = tmp_path / "run"
    if backend.KERAS_DISTRIBUTION:
        too_many = len(keras.distribution.list_devices()) * 2
        expected, sizes = MeshSizeError, {"data_parallel": too_many}
    else:  # the torch pass: keras.distribution is JAX-only
        expected, sizes = DistributionBackendError, {"data_parallel": 2}
    with pytest.raises(expected):
        train(config(distribution=sizes, output_dir=str(output)), verbose=False)
    assert not output.exists()


# Multi-host runs: the settings and the mesh, checked without starting processes
# (the two-process run is tests/distribution/test_multi_host.py).

ADDRESS = "10.0.0.1:1234"


def test_validation_docstring_examples_run():
    from chronos_moe import validation

    result = doctest.testmod(validation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and result.failed == 0


def test_cluster_settings_come_from_the_config_or_keras_environment():
    assert cluster_settings(None, environ={}) == {
        "coordinator_address": None,
        "num_processes": 1,
        "process_id": 0,
    }
    environ = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": ADDRESS,
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "4",
        "KERAS_DISTRIBUTION_PROCESS_ID": "3",
    }
    assert cluster_settings({"data_parallel": 8}, batch_size=32, environ=environ) == {
        "coordinator_address": ADDRESS,
        "num_processes": 4,
        "process_id": 3,
    }
    # A key of the config wins over its variable (one YAML, one variable per host).
    assert cluster_settings({"num_processes": 2, "process_id": 1}, environ=environ) == {
        "coordinator_address": ADDRESS,
        "num_processes": 2,
        "process_id": 1,
    }


@pytest.mark.parametrize(
    "settings, environ, error, message",
    [
        ({"num_processes": 2, "process_id": 0}, {}, ProcessSettingsError, "`coordinator_address`"),
        (
            {"num_processes": 2, "coordinator_address": ADDRESS},
            {},
            ProcessSettingsError,
            "`process_id`",
        ),
        (
            {"num_processes": 2, "process_id": 2, "coordinator_address": ADDRESS},
            {},
            ProcessSettingsError,
            r"in \[0, num_processes\).*process_id=2",
        ),
        ({"process_id": 1}, {}, ProcessSettingsError, "num_processes=None, process_id=1"),
        (
            {"num_processes": 2, "process_id": 0, "coordinator_address": "10.0.0.1"},
            {},
            ProcessSettingsError,
            "`host:port`",
        ),
        (
            {},
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"},
            ProcessSettingsError,
            "KERAS_DISTRIBUTION_NUM_PROCESSES='two'",
        ),
        (
            {"num_processes": 3, "process_id": 0, "coordinator_address": ADDRESS},
            {},
            IndivisibleBatchError,
            "num_processes=3, batch_size=8",
        ),
        ({"num_processes": 0}, {}, ValueError, "`num_processes` must be a positive integer"),
    ],
)
def test_bad_cluster_settings_are_named(settings, environ, error, message):
    with pytest.raises(error, match=message):
        cluster_settings(settings, batch_size=8, environ=environ)
    assert issubclass(ProcessSettingsError, DistributionError)


@pytest.mark.parametrize(
    "owners",
    [
        [[0, 0], [1, 1]],  # 2 processes x 2 devices, data 2 x expert 2
        [[0], [0], [1], [1]],  # data 4 x expert 1
        [[0, 0, 0, 0], [1, 1, 1, 1]],
    ],
)
def test_a_mesh_of_whole_replicas_per_process_passes(owners):
    check_process_mesh(owners, 2)


@pytest.mark.parametrize(
    "owners",
    [
        [[0, 0, 1, 1]],  # one replica over both processes (data 1 x expert 4)
        [[0], [0]],  # process 1's devices left out
        [[1, 1], [0, 0]],  # rows out of process order: the batch slices would not match
        [[0, 1], [0, 1]],
    ],
)
def test_a_mesh_that_does_not_suit_the_processes_is_named(owners):
    with pytest.raises(ProcessMeshError, match="whole data-parallel replicas"):
        check_process_mesh(owners, 2)


@pytest.mark.parametrize(
    "process_keys, message",
    [
        ({"num_processes": 2, "process_id": 0}, "needs `coordinator_address`"),
        ({"num_processes": 2, "process_id": 5, "coordinator_address": ADDRESS}, "process_id=5"),
        ({"num_processes": 3, "process_id": 0, "coordinator_address": ADDRESS}, "num_processes=3"),
        ({"coordinator_address": 1234}, "must be `host:port`"),
    ],
)
def test_bad_process_keys_in_a_config_are_named(process_keys, message):
    with pytest.raises(ConfigError, match=message):
        config(distribution={"data_parallel": 2, **process_keys})


@jax_only
def test_the_runner_refuses_bad_process_variables_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    output = tmp_path / "run"
    with pytest.raises(ProcessSettingsError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        train(config(output_dir=str(output)), verbose=False)
    assert not output.exists()


def test_a_resume_compares_the_mesh_and_process_count_not_the_coordinator():
    from chronos_moe.training.resume import _layout

    before = {"data_parallel": 4, "num_processes": 2, "coordinator_address": ADDRESS}
    moved = {**before, "coordinator_address": "10.0.0.2:1234", "process_id": 0}
    assert _layout(before) == _layout(moved)
    assert _layout(before) != _layout({**before, "num_processes": 4})
    assert _layout(None) == _layout({"data_parallel": None})
