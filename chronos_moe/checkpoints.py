"""Hugging Face Chronos checkpoints ⇄ `ChronosT5` / `ChronosBolt` weights, without pickle.

A checkpoint is a directory (or a hub id resolved to one) holding
`config.json` — a `T5Config` plus a `chronos_config` block — and
`model.safetensors` (or sharded `model-*.safetensors` with an index). Names
follow transformers' T5 (and the reference's `ChronosBoltModelForForecasting`);
linear weights are stored `(out, in)`. The model family (Chronos T5 or
Chronos-Bolt) is read from the config (`config.model_family`).

The config's fields are listed in `checkpoint_config.py` (Chronos-Bolt's in
`checkpoints_bolt.py`), the weight names in `checkpoint_weights.py`; this
module finds, reads, checks and writes the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from chronos_moe.atomic import write_atomically
from chronos_moe.checkpoint_config import (  # noqa: F401 (names of this module before)
    BOLT_CONFIG_KEYS,
    MOE_CONFIG_KEY,
    MOE_CONFIG_KEYS,
    MOE_LEGACY_DEFAULTS,
    T5_CONFIG_KEYS,
    model_arguments,
    shared_hf_fields,
)
from chronos_moe.checkpoint_weights import (  # noqa: F401 (names of this module before)
    MOE_OPTIONAL_WEIGHTS,
    TIED_ALIASES,
    assign_hf_weights,
    hf_weight_map,
)
from chronos_moe.checkpoints_bolt import bolt_config, bolt_hf_config
from chronos_moe.config import ChronosBoltConfig, ChronosConfig, model_family
from chronos_moe.errors import CheckpointError
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.bolt_model import moe_class
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.safetensors_reader import (  # noqa: F401 (names of this module before)
    MAX_HEADER_BYTES,
    SAFETENSORS_DTYPES,
    read_safetensors,
    read_safetensors_header,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# A config.json or an index file larger than this is refused before it is read.
MAX_JSON_BYTES = 16 * 2**20


def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory holding the checkpoint.

    Local directories are used as they are. Anything else is treated as a
    Hugging Face hub id (e.g. `"amazon/chronos-t5-small"`) and downloaded with
    `huggingface_hub` (config and safetensors only, cached as usual).
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(
            f"A checkpoint is a directory with {CONFIG_NAME} and {WEIGHTS_NAME}. "
            f"Received a file: {str(path)!r}"
        )
    name = str(path_or_hub_id)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(
            "Expected a local checkpoint directory or a hub id like 'amazon/chronos-t5-small'. "
            f"Received: {name!r} (no such directory)"
        )
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            name, allow_patterns=[CONFIG_NAME, "*.safetensors", WEIGHTS_INDEX_NAME]
        )
    except Exception as error:  # network, unknown repo, auth: say what was tried
        raise CheckpointError(
            f"Could not fetch {name!r} from the Hugging Face hub "
            f"({type(error).__name__}: {error}). "
            "Pass a local checkpoint directory, or check the id and the network."
        ) from error
    return Path(local)


def read_json(path: Path, what: str = "file") -> Any:
    """The JSON content of a checkpoint file, or a `CheckpointError` naming it.

    Files over `MAX_JSON_BYTES` are refused before they are read; invalid
    UTF-8, invalid JSON and nesting too deep for the parser are named errors.
    """
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{path}: {size} bytes, larger than the {MAX_JSON_BYTES} bytes a {what} may have."
        )
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


def read_config(directory: Path) -> tuple[dict[str, Any], ChronosConfig | ChronosBoltConfig]:
    """The model's keyword arguments and its `chronos_config`: `ChronosT5`'s and
    a `ChronosConfig`, or `ChronosBolt`'s and a `ChronosBoltConfig`."""
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"No {CONFIG_NAME} in checkpoint directory {str(directory)!r}.")
    raw = read_json(config_path, CONFIG_NAME)
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{config_path} must hold a JSON object. Received: {type(raw).__name__}"
        )
    try:
        family = model_family(raw)  # Chronos-2 is refused by name
    except ValueError as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    if "chronos_config" not in raw:
        raise CheckpointError(
            f"{config_path} has no `chronos_config` block: not a Chronos checkpoint."
        )
    if raw.get("model_type") != "t5":
        raise CheckpointError(
            f"chronos-moe reads Chronos T5 checkpoints (model_type 't5'). "
            f"Received: model_type={raw.get('model_type')!r} in {config_path}"
        )
    if not isinstance(raw["chronos_config"], dict):
        raise CheckpointError(
            f"{config_path}: `chronos_config` must be a JSON object. "
            f"Received: {type(raw['chronos_config']).__name__}"
        )
    if family == "Chronos-Bolt":
        return bolt_config(raw, config_path)
    kwargs, chronos = model_arguments(raw, config_path, ChronosConfig, T5_CONFIG_KEYS)
    # transformers 5 always writes `tie_word_embeddings: true` and records the
    # T5 v1.1 behaviour (no d_model^-0.5 rescale, own lm_head) as
    # `scale_decoder_outputs: false`; older files say `tie_word_embeddings: false`.
    if raw.get("scale_decoder_outputs") is not None:
        kwargs["tie_word_embeddings"] = bool(raw["scale_decoder_outputs"])
    kwargs["chronos_config"] = chronos.to_dict()
    return kwargs, chronos


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint's safetensors file(s), by name."""
    single = directory / WEIGHTS_NAME
    index = directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        tensors: dict[str, np.ndarray] = {}
        for name in _shard_names(index):
            shard = read_safetensors(directory / name)
            repeated = sorted(set(shard) & set(tensors))
            if repeated:
                raise CheckpointError(f"{directory / name}: holds {repeated[0]!r} a second time")
            tensors.update(shard)
        return tensors
    pickled = [name for name in PICKLE_NAMES if (directory / name).exists()]
    if pickled:
        raise CheckpointError(
            f"{str(directory)!r} holds only pickled weights ({pickled[0]}), which chronos-moe "
            "never loads (unpickling can run arbitrary code). Convert them to safetensors with "
            "transformers: `T5ForConditionalGeneration.from_pretrained(dir).save_pretrained(dir)`."
        )
    raise CheckpointError(f"No {WEIGHTS_NAME} in checkpoint directory {str(directory)!r}.")


def _shard_names(index: Path) -> list[str]:
    """The shard files an index names: plain `.safetensors` names in its directory."""
    content = read_json(index, "safetensors index")
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: expected {{'weight_map': {{tensor name: file name}}}}")
    names = sorted(set(weight_map.values()))
    for name in names:
        if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".safetensors"):
            raise CheckpointError(
                f"{index}: shard names must be .safetensors files in the checkpoint "
                f"directory. Received: {name!r}"
            )
        if not (index.parent / name).is_file():
            raise CheckpointError(f"{index}: names the shard {name!r}, which does not exist")
    return names


def load_chronos(path_or_hub_id: str | os.PathLike) -> ChronosT5 | ChronosBolt | ChronosMoE:
    """The model of a Chronos checkpoint: a `ChronosT5`, a `ChronosBolt` for a
    Chronos-Bolt checkpoint, or a `ChronosMoE` when `config.json` has a
    `chronos_moe_config` block."""
    directory = resolve_checkpoint(path_or_hub_id)
    kwargs, chronos = read_config(directory)
    is_bolt = isinstance(chronos, ChronosBoltConfig)
    moe_kwargs = read_json(directory / CONFIG_NAME).get(MOE_CONFIG_KEY)
    if moe_kwargs is not None and not isinstance(moe_kwargs, dict):
        raise CheckpointError(f"{directory / CONFIG_NAME}: `{MOE_CONFIG_KEY}` must be an object")
    tensors = read_weights(directory)
    # A config can ask for any size; the weights file cannot lie about its own.
    # Refuse before building a model far larger than the weights it would hold
    # (small differences get the precise missing/shape report further down).
    count_kwargs = {**kwargs, "vocab_size": 2} if is_bolt else kwargs
    needed = minimum_parameter_count(count_kwargs, moe_kwargs or {})
    stored = sum(tensor.size for tensor in tensors.values())
    if needed > 2 * stored:
        raise CheckpointError(
            f"{directory / CONFIG_NAME} describes a model of at least {needed} parameters, "
            f"but its weights hold only {stored} values: config and weights do not match."
        )
    try:
        model = ChronosBolt(**kwargs) if is_bolt else ChronosT5(**kwargs)
        if moe_kwargs is not None:
            unknown = sorted(set(moe_kwargs) - set(MOE_CONFIG_KEYS))
            if unknown:
                raise ValueError(f"unknown keys {unknown} in {MOE_CONFIG_KEY}")
            model = moe_class(model)(model, **{**MOE_LEGACY_DEFAULTS, **moe_kwargs})
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"Invalid model config in {directory / CONFIG_NAME}: {error}"
        ) from error
    first_expert = f"moe.experts.{'hidden_kernel' if is_bolt else 'head'}"
    if isinstance(model, ChronosMoE) and first_expert in tensors:
        stored = tensors[first_expert].shape[0]
        if stored != model.num_experts:
            raise CheckpointError(
                f"{directory}: {MOE_CONFIG_KEY} says num_experts={model.num_experts}, "
                f"but the weights hold {stored} experts."
            )
    assign_hf_weights(model, tensors, source=str(directory))
    return model


def minimum_parameter_count(kwargs: dict[str, Any], moe_kwargs: dict[str, Any]) -> int:
    """A lower bound on the parameters of the model a checkpoint config describes.

    Computed from the config alone, before any weight is allocated. Fields that
    are not integers count as 0 here (the model constructors reject them).
    """

    def size(values, key, default=0):
        value = values.get(key, default)
        return value if isinstance(value, int) and value > 0 else 0

    d_model, d_ff = size(kwargs, "d_model", 512), size(kwargs, "d_ff", 2048)
    vocab = size(kwargs, "vocab_size", 4096)
    inner = size(kwargs, "num_heads", 8) * size(kwargs, "d_kv", 64)
    encoder_layers = size(kwargs, "num_layers", 6)
    decoder_layers = size(kwargs, "num_decoder_layers", encoder_layers) or encoder_layers
    buckets = size(kwargs, "relative_attention_num_buckets", 32) * size(kwargs, "num_heads", 8)
    feed_forward = 2 * d_model * d_ff
    count = vocab * d_model + 2 * buckets
    count += encoder_layers * (4 * d_model * inner + feed_forward)
    count += decoder_layers * (8 * d_model * inner + feed_forward)
    if moe_kwargs and moe_kwargs.get("level") == "token":
        experts = size(moe_kwargs, "num_experts", 4)
        every = size(moe_kwargs, "moe_every", 1) or 1
        expert_hidden = size(moe_kwargs, "expert_hidden_dim") or d_ff
        blocks = -(-encoder_layers // every) + -(-decoder_layers // every)
        count += blocks * experts * 2 * d_model * expert_hidden
    elif moe_kwargs:
        experts = size(moe_kwargs, "num_experts", 4)
        expert_hidden = size(moe_kwargs, "expert_hidden_dim") or d_ff
        hidden = size(moe_kwargs, "router_hidden_dim", 128)
        count += experts * (2 * d_model * expert_hidden + d_model * vocab)
        count += hidden * (d_model + experts)
    return count


def load_chronos_t5(path_or_hub_id: str | os.PathLike) -> ChronosT5:
    """A dense `ChronosT5` from a Hugging Face Chronos checkpoint."""
    model = load_chronos(path_or_hub_id)
    if not isinstance(model, ChronosT5):
        raise CheckpointError(
            f"{path_or_hub_id} holds a {type(model).__name__} model; load it with `load_chronos`."
        )
    return model


def hf_config(model: ChronosT5 | ChronosBolt | ChronosMoE) -> dict[str, Any]:
    """The `config.json` content transformers and the `chronos` package read."""
    if isinstance(model, ChronosMoE):
        config = hf_config(model.base)
        config[MOE_CONFIG_KEY] = {key: getattr(model, key) for key in MOE_CONFIG_KEYS}
        return config
    if isinstance(model, ChronosBolt):
        return bolt_hf_config(model)
    config = {key: getattr(model, key) for key in T5_CONFIG_KEYS}
    config.update(architectures=["T5ForConditionalGeneration"], **shared_hf_fields(model))
    return config


def save_chronos(model: ChronosT5 | ChronosBolt | ChronosMoE, directory: str | os.PathLike) -> Path:
    """Writes `config.json` + `model.safetensors` (float32) into `directory`.

    Files are written to temporary names and renamed into place, so an existing
    checkpoint is never left half-overwritten.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (variable, transposed) in hf_weight_map(model).items():
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        tensors[name] = np.ascontiguousarray(value.T if transposed else value)
    write_atomically(
        directory / WEIGHTS_NAME,
        lambda path: safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"}),
    )
    text = json.dumps(hf_config(model), indent=2, sort_keys=True) + "\n"
    write_atomically(directory / CONFIG_NAME, lambda path: Path(path).write_text(text))
    return directory
