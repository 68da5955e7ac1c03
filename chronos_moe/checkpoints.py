"""Hugging Face Chronos checkpoints ⇄ `ChronosT5` / `ChronosBolt` weights, without pickle.

A checkpoint is a directory (or a hub id resolved to one) holding
`config.json` — a `T5Config` plus a `chronos_config` block — and
`model.safetensors` (or sharded `model-*.safetensors` with an index). Names
follow transformers' T5 (and the reference's `ChronosBoltModelForForecasting`);
linear weights are stored `(out, in)`. The model family (Chronos T5 or
Chronos-Bolt) is read from the config (`config.model_family`).
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
from chronos_moe.checkpoints_bolt import bolt_config, bolt_head_weights, bolt_hf_config
from chronos_moe.config import ChronosBoltConfig, ChronosConfig, model_family
from chronos_moe.errors import CheckpointError
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.bolt_model import moe_class
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.moe.token_experts import TokenExperts
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

# Names transformers may write for the tied embedding; they alias `shared.weight`.
TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

# The config.json block describing the experts of a ChronosMoE checkpoint.
MOE_CONFIG_KEY = "chronos_moe_config"
MOE_CONFIG_KEYS = (
    "num_experts",
    "top_k",
    "load_balancing_weight",
    "router_z_loss_weight",
    "router_hidden_dim",
    "expert_hidden_dim",
    "router_jitter_noise",
    "router_input_norm",
    "load_balancing_mode",
    "load_balancing_window",
    "bias_update_rate",
    "level",
    "moe_every",
    "shared_expert",
)
# What a `chronos_moe_config` written before a key existed meant by its absence
# (checkpoints of earlier versions load with the router they were trained with).
MOE_LEGACY_DEFAULTS = {"router_input_norm": False}
# The router's balancing state: a checkpoint of an earlier version lacks it, and
# the fresh state (uniform load, zero bias) is what that router ran with.
MOE_OPTIONAL_WEIGHTS = (
    "moe.router.expert_load",
    "moe.router.selection_bias",
    "moe.router.feature_norm.statistics_initialised",
)

# ChronosT5 arguments read from config.json (transformers' T5Config names).
T5_CONFIG_KEYS = (
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "dropout_rate",
    "layer_norm_epsilon",
    "feed_forward_proj",
    "tie_word_embeddings",
    "decoder_start_token_id",
    "pad_token_id",
    "eos_token_id",
    "initializer_factor",
)


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
    try:
        chronos = ChronosConfig.from_dict(raw["chronos_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid `chronos_config`: {error}") from None
    kwargs = {key: raw[key] for key in T5_CONFIG_KEYS if key in raw and raw[key] is not None}
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


def hf_weight_map(model: ChronosT5 | ChronosBolt | ChronosMoE) -> dict[str, tuple[Any, bool]]:
    """Maps each checkpoint weight name to `(keras variable, transposed)`.

    Dense weights carry transformers' T5 names; `ChronosBolt` adds its patch
    embedding and output blocks under the reference's names
    (`input_patch_embedding.hidden_layer.weight`, …); a `ChronosMoE` adds its router
    and experts under `moe.` (`moe.router.hidden.kernel`, `moe.experts.head`, …),
    so the reference `chronos` package still reads the base model. Token-level
    experts sit under `moe.<stack>.block.<i>.experts.` (`wi`, `wo`, `router`,
    …); a shared expert keeps the dense `DenseReluDense` names."""
    if isinstance(model, ChronosMoE) and model.level == "token":
        return hf_weight_map(model.base)
    if isinstance(model, ChronosMoE):
        return {**hf_weight_map(model.base), **_series_moe_weights(model.router, model.experts)}
    mapping: dict[str, tuple[Any, bool]] = {"shared.weight": (model.shared.embeddings, False)}
    stacks = (
        ("encoder", model.encoder_blocks, model.encoder_position_bias, model.encoder_final_norm),
        ("decoder", model.decoder_blocks, model.decoder_position_bias, model.decoder_final_norm),
    )
    for stack, blocks, position_bias, final_norm in stacks:
        mapping[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            position_bias.embeddings,
            False,
        )
        for i, block in enumerate(blocks):
            mapping.update(_block_weights(stack, i, block))
        mapping[f"{stack}.final_layer_norm.weight"] = (final_norm.scale, False)
    if isinstance(model, ChronosBolt):
        mapping.update(bolt_head_weights(model))
    elif model.lm_head is not None:
        mapping["lm_head.weight"] = (model.lm_head.kernel, True)
    return mapping


def _series_moe_weights(router, experts) -> dict[str, tuple[Any, bool]]:
    """`hf_weight_map`'s entries for a series-level router and its experts (`moe.`)."""
    mapping = {}
    if router.input_norm:
        mapping["moe.router.input_norm.weight"] = (router.norm.gamma, False)
        mapping["moe.router.input_norm.bias"] = (router.norm.beta, False)
        feature_norm = router.feature_norm
        mapping["moe.router.feature_norm.weight"] = (feature_norm.gamma, False)
        mapping["moe.router.feature_norm.bias"] = (feature_norm.beta, False)
        mapping["moe.router.feature_norm.running_mean"] = (feature_norm.moving_mean, False)
        mapping["moe.router.feature_norm.running_var"] = (feature_norm.moving_variance, False)
        mapping["moe.router.feature_norm.statistics_initialised"] = (
            router.statistics_initialised,
            False,
        )
    for layer in (router.hidden, router.logits):
        mapping[f"moe.router.{layer.name}.kernel"] = (layer.kernel, False)
        mapping[f"moe.router.{layer.name}.bias"] = (layer.bias, False)
    mapping["moe.router.expert_load"] = (router.expert_load, False)
    mapping["moe.router.selection_bias"] = (router.selection_bias, False)
    for variable in experts.expert_weights:  # moe.experts.head, … (Bolt: hidden_kernel, …)
        mapping[f"moe.experts.{variable.name}"] = (variable, False)
    return mapping


def _block_weights(stack: str, i: int, block) -> dict[str, tuple[Any, bool]]:
    """`hf_weight_map`'s entries for block `i` of `stack` (`"encoder"` or `"decoder"`)."""
    mapping = {}
    prefix = f"{stack}.block.{i}.layer"
    attentions = [("0.SelfAttention", block.self_attention, block.self_attention_norm, 0)]
    if block.is_decoder:
        cross = ("1.EncDecAttention", block.cross_attention, block.cross_attention_norm, 1)
        attentions.append(cross)
    for name, attention, norm, index in attentions:
        for short, dense in zip(
            "qkvo",
            (attention.query, attention.key, attention.value, attention.output_dense),
            strict=True,
        ):
            mapping[f"{prefix}.{name}.{short}.weight"] = (dense.kernel, True)
        mapping[f"{prefix}.{index}.layer_norm.weight"] = (norm.scale, False)
    index = len(attentions)
    ffn = block.feed_forward
    if isinstance(ffn, TokenExperts):
        names = ("wi_0", "wi_1", "wo") if ffn.is_gated else ("wi", "wo")
        for short in (*names, "router", "expert_load", "selection_bias"):
            mapping[f"moe.{stack}.block.{i}.experts.{short}"] = (getattr(ffn, short), False)
        ffn = ffn.shared
    if ffn is not None:
        for short in ("wi_0", "wi_1", "wo") if ffn.is_gated else ("wi", "wo"):
            mapping[f"{prefix}.{index}.DenseReluDense.{short}.weight"] = (
                getattr(ffn, short).kernel,
                True,
            )
    mapping[f"{prefix}.{index}.layer_norm.weight"] = (block.feed_forward_norm.scale, False)
    return mapping


def assign_hf_weights(
    model: ChronosT5 | ChronosBolt | ChronosMoE, tensors: dict[str, np.ndarray], source: str = ""
) -> None:
    """Copies transformers-named tensors into `model`, after checking that every
    name and shape matches (nothing is assigned when anything is wrong)."""
    mapping = hf_weight_map(model)
    base = model.base if isinstance(model, ChronosMoE) else model
    lm_head = getattr(base, "lm_head", None)  # ChronosBolt has none
    if lm_head is not None and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        # An unscaled head that transformers 5 kept tied to the embedding.
        tensors = {**tensors, "lm_head.weight": tensors["shared.weight"]}
    ignorable = set(TIED_ALIASES) | ({"lm_head.weight"} if lm_head is None else set())
    missing = sorted(set(mapping) - set(tensors) - set(MOE_OPTIONAL_WEIGHTS))
    unexpected = sorted(set(tensors) - set(mapping) - ignorable)
    wrong_shapes = []
    for name, (variable, transposed) in mapping.items():
        if name in tensors:
            shape = tuple(tensors[name].shape[::-1] if transposed else tensors[name].shape)
            if shape != tuple(variable.shape):
                stored = tuple(tensors[name].shape)
                expected = tuple(variable.shape[::-1] if transposed else variable.shape)
                wrong_shapes.append(f"{name}: expected {expected}, found {stored}")
    problems = []
    if missing:
        problems.append(f"missing weights {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    if wrong_shapes:
        problems.append("shapes that do not match the config: " + "; ".join(wrong_shapes[:5]))
    if problems:
        raise CheckpointError(
            f"The weights{f' in {source}' if source else ''} do not match the model config: "
            + " | ".join(problems)
        )
    for name, (variable, transposed) in mapping.items():
        if name not in tensors:  # an optional weight (MOE_OPTIONAL_WEIGHTS) keeps its start
            continue
        value = tensors[name].T if transposed else tensors[name]
        variable.assign(np.ascontiguousarray(value).astype(variable.dtype))


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
    config.update(
        architectures=["T5ForConditionalGeneration"],
        model_type="t5",
        is_encoder_decoder=True,
        use_cache=True,
        dense_act_fn="gelu_new"
        if model.feed_forward_proj == "gated-gelu"
        else model.feed_forward_proj.split("-")[-1],
        is_gated_act=model.feed_forward_proj.startswith("gated-"),
        dtype="float32",
        chronos_config=model.chronos_config.to_dict(),
    )
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
