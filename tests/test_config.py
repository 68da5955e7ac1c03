"""Which Chronos model families load: Chronos T5 and Chronos-Bolt do, each read
with its own config; Chronos-2 is refused by name, not as a list of unknown
`chronos_config` keys."""

import doctest
import json

import pytest

from chronos_moe import config as config_module
from chronos_moe.checkpoints import CheckpointError, load_chronos, read_config
from chronos_moe.config import ChronosBoltConfig, ChronosConfig, check_model_family, model_family

QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
T5_SHAPE = {"d_model": 256, "d_ff": 1024, "d_kv": 64, "num_heads": 4, "num_layers": 4}
# The config.json of amazon/chronos-bolt-tiny and of amazon/chronos-2, less their T5 details.
BOLT = {
    **T5_SHAPE,
    "architectures": ["ChronosBoltModelForForecasting"],
    "chronos_pipeline_class": "ChronosBoltPipeline",
    "model_type": "t5",
    "chronos_config": {
        "context_length": 2048,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "prediction_length": 64,
        "quantiles": QUANTILES,
        "use_reg_token": True,
    },
}
CHRONOS_2 = {
    **T5_SHAPE,
    "architectures": ["Chronos2Model"],
    "chronos_pipeline_class": "Chronos2Pipeline",
    "model_type": "t5",
    "chronos_config": {
        "context_length": 8192,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "output_patch_size": 16,
        "max_output_patches": 64,
        "quantiles": QUANTILES,
        "use_arcsinh": True,
        "use_reg_token": True,
    },
}
T5 = {
    **T5_SHAPE,
    "architectures": ["T5ForConditionalGeneration"],
    "model_type": "t5",
    "chronos_config": ChronosConfig().to_dict(),
}


def write_checkpoint(directory, config):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_chronos_2_checkpoint_is_refused_by_name(tmp_path):
    directory = write_checkpoint(tmp_path / "checkpoint", CHRONOS_2)
    for load in (read_config, load_chronos):
        with pytest.raises(CheckpointError) as caught:
            load(directory)
        message = str(caught.value)
        assert "Chronos-2 checkpoints are not supported yet" in message
        assert "loads Chronos T5 (amazon/chronos-t5-*) and Chronos-Bolt" in message
        assert "Unknown keys" not in message


def test_a_bolt_config_reads_as_a_bolt_config(tmp_path):
    kwargs, chronos = read_config(write_checkpoint(tmp_path / "bolt", BOLT))
    assert chronos == ChronosBoltConfig.from_dict(BOLT["chronos_config"])
    assert chronos.quantiles == tuple(QUANTILES) and chronos.use_reg_token
    assert kwargs["d_model"] == 256 and "vocab_size" not in kwargs


@pytest.mark.parametrize(
    "config",
    [
        {"architectures": ["ChronosBoltModelForForecasting"]},
        {"chronos_pipeline_class": "ChronosBoltPipeline"},
        {"chronos_config": {"input_patch_size": 16}},
        {"chronos_config": {"use_reg_token": True}},
        {"chronos_config": {"quantiles": QUANTILES}},
    ],
)
def test_each_mark_of_bolt_is_enough(config):
    assert model_family(config) == "Chronos-Bolt"
    with pytest.raises(ValueError, match="^Expected a Chronos-T5 config. Received: a Chronos-Bolt"):
        check_model_family(config)
    check_model_family(config, expected="Chronos-Bolt")


@pytest.mark.parametrize(
    "config, evidence",
    [
        ({"architectures": ["Chronos2Model"]}, "model classes"),
        ({"chronos_config": CHRONOS_2["chronos_config"]}, "chronos_config keys"),
    ],
)
def test_each_mark_of_chronos_2_is_enough(config, evidence):
    with pytest.raises(ValueError, match=f"^Chronos-2 checkpoints .* Received: {evidence} "):
        model_family(config)


def test_a_bolt_chronos_config_block_alone_is_refused_by_name():
    with pytest.raises(ValueError, match="^Expected a Chronos-T5 config. Received: a Chronos-Bolt"):
        ChronosConfig.from_dict(BOLT["chronos_config"])


def test_other_unknown_keys_are_still_listed():
    with pytest.raises(ValueError, match=r"Unknown keys in chronos_config: \['bins'\]"):
        ChronosConfig.from_dict({**ChronosConfig().to_dict(), "bins": 3})


def test_a_causal_model_type_names_chronos_t5():
    with pytest.raises(ValueError, match="loads Chronos T5 models.*model_type='causal'"):
        ChronosConfig.from_dict({**ChronosConfig().to_dict(), "model_type": "causal"})


def test_a_chronos_t5_config_passes(tmp_path):
    check_model_family(T5)
    check_model_family({"architectures": [1, {}], "chronos_pipeline_class": ["x"]})  # no crash
    _, chronos = read_config(write_checkpoint(tmp_path / "t5", T5))
    assert chronos == ChronosConfig()


def test_the_docstring_example_runs():
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [
        test
        for function in (check_model_family, model_family, ChronosBoltConfig)
        for test in finder.find(function, globs=vars(config_module))
    ]
    for test in tests:
        runner.run(test)
    assert tests and runner.failures == 0
