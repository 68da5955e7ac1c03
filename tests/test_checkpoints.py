"""Hugging Face checkpoints: loading, saving for the reference `chronos`
package, bfloat16 and sharded files, and the errors for broken checkpoints.
No test touches the network."""

import json
import pickle
import shutil

import huggingface_hub
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch
from keras import ops

from chronos_moe.checkpoints import (
    CheckpointError,
    assign_hf_weights,
    hf_weight_map,
    load_chronos_t5,
    save_chronos,
    write_atomically,
)
from tests.checkpoint_factory import (
    as_transformers4_layout,
    load_reference_model,
    load_reference_pipeline,
    make_reference_checkpoint,
    reference_logits,
)

CHECKPOINT = dict(vocab_size=512, context_length=16, prediction_length=4)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fails any attempt to reach the Hugging Face hub."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("network access is not allowed in the tests")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return calls


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tied = make_reference_checkpoint(tmp_path_factory.mktemp("tied"), **CHECKPOINT)
    untied = make_reference_checkpoint(
        tmp_path_factory.mktemp("untied"), tie_word_embeddings=False, seed=1, **CHECKPOINT
    )
    return {"tied": tied, "untied": as_transformers4_layout(untied)}


def weights_by_name(model):
    return {
        name: ops.convert_to_numpy(variable) for name, (variable, _) in hf_weight_map(model).items()
    }


def read_tensors(directory):
    return safetensors.numpy.load_file(str(directory / "model.safetensors"))


def inputs(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(2, vocab_size, (2, 12))
    mask = np.ones_like(input_ids)
    mask[1, :4] = 0
    input_ids[1, :4] = 0
    input_ids[:, -1] = 1
    decoder_input_ids = rng.integers(0, vocab_size, (2, 5))
    decoder_input_ids[:, 0] = 0
    return input_ids, mask, decoder_input_ids


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_saved_checkpoint_loads_in_the_reference(checkpoints, tmp_path, kind):
    source = checkpoints[kind]
    model = load_chronos_t5(source)
    assert model.tie_word_embeddings == (kind == "tied")
    save_chronos(model, tmp_path)

    # Same tensors (names and values) as transformers wrote, minus the aliases of
    # the tied embedding.
    original, ours = read_tensors(source), read_tensors(tmp_path)
    aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    assert set(ours) == set(original) - aliases
    for name, value in ours.items():
        assert value.dtype == np.float32, name
        np.testing.assert_array_equal(value, original[name], err_msg=name)

    # transformers computes the same logits from both directories.
    ids, mask, decoder_ids = inputs(model.vocab_size)
    expected, _ = reference_logits(load_reference_model(source), ids, mask, decoder_ids)
    actual, _ = reference_logits(load_reference_model(tmp_path), ids, mask, decoder_ids)
    np.testing.assert_array_equal(actual, expected)

    # The reference pipeline reads the chronos_config and forecasts the same.
    context = [torch.tensor(np.sin(np.arange(30.0)) * 4 + 2), torch.arange(10.0)]
    reference = load_reference_pipeline(source).predict(context, top_k=1, num_samples=2)
    reloaded = load_reference_pipeline(tmp_path)
    assert reloaded.model.config == load_reference_pipeline(source).model.config
    np.testing.assert_array_equal(
        reloaded.predict(context, top_k=1, num_samples=2).numpy(), reference.numpy()
    )


def test_our_load_of_our_save_is_bit_exact(checkpoints, tmp_path):
    model = load_chronos_t5(checkpoints["untied"])
    save_chronos(model, tmp_path / "first")
    again = load_chronos_t5(tmp_path / "first")
    config = {key: value for key, value in model.get_config().items() if key != "name"}
    assert {key: again.get_config()[key] for key in config} == config
    assert len(again.weights) == len(model.weights)
    for original, loaded in zip(model.weights, again.weights, strict=True):
        assert original.path.split("/", 1)[1] == loaded.path.split("/", 1)[1]
        np.testing.assert_array_equal(ops.convert_to_numpy(loaded), ops.convert_to_numpy(original))
    # Saving is deterministic: the same model writes the same bytes.
    save_chronos(again, tmp_path / "second")
    for name in ("model.safetensors", "config.json"):
        first = (tmp_path / "first" / name).read_bytes()
        assert (tmp_path / "second" / name).read_bytes() == first, name


def test_bfloat16_checkpoint_loads_exactly(tmp_path):
    make_reference_checkpoint(tmp_path, weights_dtype=torch.bfloat16, **CHECKPOINT)
    stored = safetensors.torch.load_file(str(tmp_path / "model.safetensors"))
    assert {value.dtype for value in stored.values()} == {torch.bfloat16}
    model = load_chronos_t5(tmp_path)
    for name, (variable, transposed) in hf_weight_map(model).items():
        expected = stored[name].float().numpy()
        actual = ops.convert_to_numpy(variable)
        assert actual.dtype == np.float32
        np.testing.assert_array_equal(actual.T if transposed else actual, expected, err_msg=name)


def test_sharded_checkpoint_loads_like_a_single_file(checkpoints, tmp_path):
    reference = load_reference_model(checkpoints["tied"])
    reference.save_pretrained(tmp_path, max_shard_size="200KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    sharded = weights_by_name(load_chronos_t5(tmp_path))
    single = weights_by_name(load_chronos_t5(checkpoints["tied"]))
    assert sharded.keys() == single.keys()
    for name, value in single.items():
        np.testing.assert_array_equal(sharded[name], value, err_msg=name)


# ---- errors ------------------------------------------------------------------------------


def copy_checkpoint(source, target, files=("config.json", "model.safetensors")):
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(source / name, target / name)
    return target


def edit_config(directory, edit):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def edit_tensors(directory, edit):
    path = directory / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(path))
    edit(tensors)
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_directory_without_config(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path, files=["model.safetensors"])
    with pytest.raises(CheckpointError, match=r"No config\.json"):
        load_chronos_t5(tmp_path)


def test_directory_without_weights(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path, files=["config.json"])
    with pytest.raises(CheckpointError, match=r"No model\.safetensors"):
        load_chronos_t5(tmp_path)


def test_pickled_weights_are_refused_without_unpickling(checkpoints, tmp_path, monkeypatch):
    copy_checkpoint(checkpoints["tied"], tmp_path, files=["config.json"])
    (tmp_path / "pytorch_model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    unpickled = []

    def record(name):
        def refuse(*args, **kwargs):
            unpickled.append(name)
            raise AssertionError(f"{name} called on an untrusted file")

        return refuse

    monkeypatch.setattr(pickle, "load", record("pickle.load"))
    monkeypatch.setattr(pickle, "loads", record("pickle.loads"))
    monkeypatch.setattr(pickle, "Unpickler", record("pickle.Unpickler"))
    monkeypatch.setattr(torch, "load", record("torch.load"))
    with pytest.raises(CheckpointError, match="pickle") as error:
        load_chronos_t5(tmp_path)
    assert "pytorch_model.bin" in str(error.value)
    assert "safetensors" in str(error.value)  # says how to convert
    assert unpickled == []


def test_config_without_chronos_config(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    edit_config(tmp_path, lambda config: config.pop("chronos_config"))
    with pytest.raises(CheckpointError, match="chronos_config"):
        load_chronos_t5(tmp_path)


def test_config_of_another_model_type(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    edit_config(tmp_path, lambda config: config.update(model_type="bart"))
    with pytest.raises(CheckpointError, match="model_type") as error:
        load_chronos_t5(tmp_path)
    assert "bart" in str(error.value)


def test_config_that_is_not_json(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_chronos_t5(tmp_path)


def test_weight_with_a_wrong_shape(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    name = "encoder.block.1.layer.1.DenseReluDense.wi.weight"
    edit_tensors(tmp_path, lambda t: t.update({name: np.zeros((65, 32), np.float32)}))
    with pytest.raises(CheckpointError, match="shape") as error:
        load_chronos_t5(tmp_path)
    assert name in str(error.value)
    assert "(64, 32)" in str(error.value) and "(65, 32)" in str(error.value)


def test_missing_weight(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    name = "decoder.block.0.layer.1.EncDecAttention.k.weight"
    edit_tensors(tmp_path, lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match="missing") as error:
        load_chronos_t5(tmp_path)
    assert name in str(error.value)


def test_unexpected_weight(checkpoints, tmp_path):
    copy_checkpoint(checkpoints["tied"], tmp_path)
    name = "encoder.block.7.layer.0.SelfAttention.q.weight"
    edit_tensors(tmp_path, lambda t: t.update({name: np.zeros((32, 32), np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected") as error:
        load_chronos_t5(tmp_path)
    assert name in str(error.value)


def test_nothing_is_assigned_when_a_weight_is_wrong(checkpoints):
    model = load_chronos_t5(checkpoints["tied"])
    before = weights_by_name(model)
    tensors = read_tensors(checkpoints["tied"])
    tensors = {name: value + 1.0 for name, value in tensors.items()}
    tensors["shared.weight"] = tensors["shared.weight"][:, :-1]
    with pytest.raises(CheckpointError, match="shared.weight"):
        assign_hf_weights(model, tensors)
    for name, value in weights_by_name(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_path_that_is_a_file(checkpoints):
    with pytest.raises(CheckpointError, match="file"):
        load_chronos_t5(checkpoints["tied"] / "config.json")


@pytest.mark.parametrize(
    "path", ["no_such_checkpoint", "./missing/model", "/definitely/not/here", "a/b/c", "~/nope"]
)
def test_missing_path_that_is_not_a_hub_id(path, no_network):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_chronos_t5(path)
    assert no_network == []  # the hub was not asked


def test_hub_id_goes_to_the_hub_for_safetensors_only(no_network):
    with pytest.raises(CheckpointError, match="amazon/chronos-t5-tiny") as error:
        load_chronos_t5("amazon/chronos-t5-tiny")
    assert "network access is not allowed" in str(error.value)
    ((args, kwargs),) = no_network
    patterns = kwargs.get("allow_patterns", [])
    assert patterns and not any(pattern.endswith(".bin") for pattern in patterns), patterns


def test_write_atomically_names_the_target_not_its_temporary_file(tmp_path):
    target = tmp_path / "missing-dir" / "scores.csv"
    with pytest.raises(FileNotFoundError) as info:
        write_atomically(target, lambda path: open(path, "w").close())
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
    # An error about another path is left as it is.
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        write_atomically(tmp_path / "x.csv", lambda path: open(tmp_path / "no" / "elsewhere"))
    assert list(tmp_path.iterdir()) == []
