"""The Chronos-Bolt side of `checkpoints.py`: its `config.json` fields and the
weights of its patch embedding and quantile head under the reference's names
(`chronos.chronos_bolt.ChronosBoltModelForForecasting`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chronos_moe.config import ChronosBoltConfig
from chronos_moe.errors import CheckpointError
from chronos_moe.models.chronos_bolt import ChronosBolt

# ChronosBolt arguments read from config.json: T5Config's, less the vocabulary
# (it follows `use_reg_token`) and the token ids of T5's tokens.
BOLT_CONFIG_KEYS = (
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
    "decoder_start_token_id",
    "initializer_factor",
)


def bolt_config(raw: dict[str, Any], config_path: Path) -> tuple[dict[str, Any], ChronosBoltConfig]:
    """`checkpoints.read_config` of a Chronos-Bolt checkpoint: `ChronosBolt`'s
    keyword arguments and its `ChronosBoltConfig`."""
    try:
        chronos = ChronosBoltConfig.from_dict(raw["chronos_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid `chronos_config`: {error}") from None
    kwargs = {key: raw[key] for key in BOLT_CONFIG_KEYS if key in raw and raw[key] is not None}
    kwargs["chronos_config"] = chronos.to_dict()
    return kwargs, chronos


def bolt_head_weights(model: ChronosBolt) -> dict[str, tuple[Any, bool]]:
    """`hf_weight_map`'s entries for the patch embedding and the quantile head
    (`input_patch_embedding.hidden_layer.weight`, …; kernels transposed)."""
    mapping = {}
    for name in ("input_patch_embedding", "output_patch_embedding"):
        block = getattr(model, name)
        for layer in (block.hidden_layer, block.output_layer, block.residual_layer):
            mapping[f"{name}.{layer.name}.weight"] = (layer.kernel, True)
            mapping[f"{name}.{layer.name}.bias"] = (layer.bias, False)
        if block.layer_norm is not None:
            mapping[f"{name}.layer_norm.weight"] = (block.layer_norm.scale, False)
    return mapping


def bolt_hf_config(model: ChronosBolt) -> dict[str, Any]:
    """`hf_config` of a `ChronosBolt`: what the reference's Bolt checkpoints hold."""
    config = {key: getattr(model, key) for key in BOLT_CONFIG_KEYS}
    config.update(
        architectures=["ChronosBoltModelForForecasting"],
        chronos_pipeline_class="ChronosBoltPipeline",
        model_type="t5",
        vocab_size=model.vocab_size,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        is_encoder_decoder=True,
        use_cache=True,
        dense_act_fn="gelu_new"
        if model.feed_forward_proj == "gated-gelu"
        else model.feed_forward_proj.split("-")[-1],
        is_gated_act=model.feed_forward_proj.startswith("gated-"),
        dtype="float32",
        chronos_config=model.chronos_config.to_dict(),
    )
    if model.chronos_config.use_reg_token:
        config["reg_token_id"] = model.reg_token_id
    return config
