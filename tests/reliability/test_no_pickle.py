"""No pickle, ever (issue 9, item 6).

A static check: no module of the package can load a pickle (`pickle` and its
relatives, `torch.load`, `allow_pickle`, `safe_mode=False`, …), found on the
syntax tree and reported as file:line. A dynamic check: files whose
unpickling would create a marker file are planted under every name a loader
of ours might touch; each load ends in a named error and the marker never
appears. Each planted payload is first shown to be live: unpickled on
purpose, it does create the marker.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import chronos_moe
from chronos_moe.checkpoints import CheckpointError, load_chronos, save_chronos
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.training import checkpoint as training_checkpoint

PACKAGE = Path(chronos_moe.__file__).parent

# ---- the static check ------------------------------------------------------------------

# Modules whose purpose is to load pickles (or marshalled code).
PICKLE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_literal(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def pickle_loading(source: str) -> list[tuple[int, str]]:
    """`(line, what)` for every way `source` could load a pickle."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if a.name.split(".")[0] in PICKLE_MODULES
            ]
        elif (
            isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES
        ):
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Attribute) and node.attr in (
            "read_pickle",
            "enable_unsafe_deserialization",
        ):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.startswith("torch.") and name.endswith(".load") or name == "torch.load":
                found.append((node.lineno, f"{name}(...)"))
            if name in ("np.load", "numpy.load") and not _is_literal(
                keywords.get("allow_pickle"), False
            ):
                found.append((node.lineno, f"{name} without allow_pickle=False"))
            if "allow_pickle" in keywords and not _is_literal(keywords["allow_pickle"], False):
                found.append((node.lineno, "allow_pickle not False"))
            if "safe_mode" in keywords and not _is_literal(keywords["safe_mode"], True):
                found.append((node.lineno, "safe_mode not True"))
            if "weights_only" in keywords and not _is_literal(keywords["weights_only"], True):
                found.append((node.lineno, "weights_only not True"))
            if name in ("__import__", "importlib.import_module") and any(
                isinstance(a, ast.Constant) and str(a.value).split(".")[0] in PICKLE_MODULES
                for a in node.args
            ):
                found.append((node.lineno, f"{name} of a pickle module"))
    return sorted(set(found))


def test_the_package_has_no_pickle_loading():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the whole package, not an empty glob
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in files
        for line, what in pickle_loading(path.read_text())
    ]
    assert problems == [], "pickle loading in the package:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import dill as d",
        "from joblib import load",
        "import marshal",
        "x = torch.load(path)",
        "x = torch.load(path, weights_only=False)",
        "x = torch.jit.load(path)",
        "x = np.load(path)",
        "x = numpy.load(path, allow_pickle=True)",
        "x = np.load(path, allow_pickle=flag)",
        "keras.saving.load_model(path, safe_mode=False)",
        "keras.config.enable_unsafe_deserialization()",
        "frame = pd.read_pickle(path)",
        "module = importlib.import_module('pickle')",
    ],
)
def test_the_static_check_finds_each_pattern(source):
    assert len(pickle_loading(source)) >= 1, source


def test_the_static_check_passes_safe_code():
    safe = "x = np.load(p, allow_pickle=False)\nkeras.saving.load_model(p, safe_mode=True)\n"
    assert pickle_loading(safe) == []


# ---- the payloads ----------------------------------------------------------------------


class CreatesMarker:
    """Unpickling this creates the file `marker` (through `open`, a builtin)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER-unpickled"
    yield path
    assert not path.exists(), f"a planted pickle was unpickled: {path} exists"


def live(payload: bytes, load, marker: Path) -> bytes:
    """`payload`, after checking that `load(payload)` creates the marker (then removed)."""
    try:
        load(payload)
    except Exception:  # noqa: BLE001 - `open` returns a file, not what the loader wanted
        pass
    assert marker.exists(), "the payload is not live: unpickling it created no marker"
    marker.unlink()
    return payload


def pickle_payload(marker: Path) -> bytes:
    return live(pickle.dumps(CreatesMarker(marker)), pickle.loads, marker)


def torch_payload(marker: Path) -> bytes:
    """A `torch.save` zip archive whose `data.pkl` creates the marker."""
    buffer = io.BytesIO()
    torch.save({"shared.weight": CreatesMarker(marker)}, buffer)

    def load(data):
        torch.load(io.BytesIO(data), weights_only=False)  # the unsafe load, on purpose

    return live(buffer.getvalue(), load, marker)


# ---- Hugging Face checkpoints ------------------------------------------------------------


@pytest.fixture(scope="module")
def config_text(tmp_path_factory) -> str:
    model = ChronosT5(
        vocab_size=64,
        d_model=8,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        chronos_config={"n_tokens": 64, "context_length": 16, "prediction_length": 4},
    )
    directory = save_chronos(model, tmp_path_factory.mktemp("valid"))
    return (directory / "config.json").read_text()


def plant_pytorch_bin(directory, marker):
    (directory / "pytorch_model.bin").write_bytes(torch_payload(marker))
    return "pytorch_model.bin"


def plant_sharded_pytorch_bin(directory, marker):
    shard = "pytorch_model-00001-of-00001.bin"
    (directory / shard).write_bytes(torch_payload(marker))
    index = {"weight_map": {"shared.weight": shard}}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return "pytorch_model.bin.index.json"


def plant_pickle_as_safetensors(directory, marker):
    (directory / "model.safetensors").write_bytes(pickle_payload(marker))
    return "model.safetensors"


def plant_torch_zip_as_safetensors(directory, marker):
    (directory / "model.safetensors").write_bytes(torch_payload(marker))
    return "model.safetensors"


def plant_pickle_as_shard(directory, marker):
    shard = "model-00001-of-00001.safetensors"
    (directory / shard).write_bytes(pickle_payload(marker))
    index = {"weight_map": {"shared.weight": shard}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return shard


def plant_index_naming_a_pickle(directory, marker):
    (directory / "pytorch_model.bin").write_bytes(torch_payload(marker))
    index = {"weight_map": {"shared.weight": "pytorch_model.bin"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return "model.safetensors.index.json"


PLANTS = [
    plant_pytorch_bin,
    plant_sharded_pytorch_bin,
    plant_pickle_as_safetensors,
    plant_torch_zip_as_safetensors,
    plant_pickle_as_shard,
    plant_index_naming_a_pickle,
]
LOADERS = {
    "load_chronos": load_chronos,
    "ChronosPipeline.from_pretrained": ChronosPipeline.from_pretrained,
}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("plant", PLANTS)
def test_planted_pickles_in_a_checkpoint_are_refused(tmp_path, marker, config_text, plant, loader):
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / "config.json").write_text(config_text)
    named = plant(directory, marker)
    with pytest.raises(CheckpointError) as error:
        loader(directory)
    assert named in str(error.value)


# ---- .keras files ---------------------------------------------------------------------------


def test_keras_file_with_a_lambda_layer_is_refused(tmp_path, marker):
    """The Lambda's code would create the marker when the model runs."""
    inputs = keras.Input((2,))
    marker_path = str(marker)
    outputs = keras.layers.Lambda(lambda x: (open(marker_path, "w").close(), x)[1])(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    marker.unlink()  # tracing the Lambda on save ran it once
    with pytest.raises(ValueError, match="Lambda") as error:
        chronos_moe.load_model(tmp_path / "lambda.keras")
    assert "safe_mode" in str(error.value)


def test_load_model_cannot_be_told_to_run_code(tmp_path, marker):
    inputs = keras.Input((2,))
    marker_path = str(marker)
    outputs = keras.layers.Lambda(lambda x: (open(marker_path, "w").close(), x)[1])(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    marker.unlink()
    with pytest.raises(TypeError, match="safe_mode"):
        chronos_moe.load_model(tmp_path / "lambda.keras", safe_mode=False)
    ran = marker.exists()
    marker.unlink(missing_ok=True)  # the fixture's own check would error, not fail
    assert not ran, "load_model(safe_mode=False) ran the Lambda's code"


def test_keras_file_with_object_array_weights_is_refused(tmp_path, marker):
    """A `.keras` whose weights are a `.npz` of pickled object arrays."""
    inputs = keras.Input((2,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "dense.keras")
    with zipfile.ZipFile(tmp_path / "dense.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    payload = np.array([CreatesMarker(marker)], dtype=object)
    np.savez(buffer, **{"__root__": payload, "layers/dense": payload})  # keys Keras reads
    weights = live(
        buffer.getvalue(),
        lambda data: np.load(io.BytesIO(data), allow_pickle=True)["layers/dense"],
        marker,
    )
    del members["model.weights.h5"]
    members["model.weights.npz"] = weights
    with zipfile.ZipFile(tmp_path / "planted.keras", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="allow_pickle"):
        chronos_moe.load_model(tmp_path / "planted.keras")


# ---- training checkpoints -------------------------------------------------------------------


@pytest.fixture
def training_checkpoint_dir(tmp_path):
    """A valid `step-1/` of a tiny model, and the model and optimizer to load it into."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    path = training_checkpoint.save_checkpoint(tmp_path / "run", 1, model, optimizer, {})
    return path, model, optimizer


def replace_in_manifest(path: Path, name: str, content: bytes) -> None:
    """Writes `content` as `name` with a manifest that vouches for it, as an
    attacker who hands over a whole checkpoint would."""
    (path / name).write_bytes(content)
    manifest = json.loads((path / training_checkpoint.MANIFEST).read_text())
    manifest[name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (path / training_checkpoint.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_planted_pickles_in_a_training_checkpoint_are_never_unpickled(
    training_checkpoint_dir, marker, name
):
    path, model, optimizer = training_checkpoint_dir
    (path / "optimizer.pt").write_bytes(torch_payload(marker))  # a name a loader might try
    replace_in_manifest(path, name, torch_payload(marker))
    with pytest.raises(Exception) as error:  # noqa: B017 - the marker is the point here
        training_checkpoint.load_checkpoint(path, model, optimizer)
    assert not isinstance(error.value, (AssertionError, pickle.UnpicklingError))


def test_a_planted_pickle_in_a_training_checkpoint_is_named(training_checkpoint_dir, marker):
    path, model, optimizer = training_checkpoint_dir
    replace_in_manifest(path, "optimizer.safetensors", torch_payload(marker))
    with pytest.raises(ValueError, match="optimizer.safetensors"):
        training_checkpoint.load_checkpoint(path, model, optimizer)
