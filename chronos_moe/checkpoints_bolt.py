"""The Chronos-Bolt side of `checkpoints.py`: its `config.json` fields and the
weights of its patch embedding and quantile head under the reference's names
(`chronos.chronos_bolt.ChronosBoltModelForForecasting`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chronos_moe.checkpoint_config import (  # noqa: F401 (BOLT_CONFIG_KEYS: imported from here)
    BOLT_CONFIG_KEYS,
    model_arguments,
    shared_hf_fields,
)
from chronos_moe.config import ChronosBoltConfig
from chronos_moe.models.chronos_bolt import ChronosBolt


def bolt_config(raw: dict[str, Any], config_path: Path) -> tuple[dict[str, Any], ChronosBoltConfig]:
    """`checkpoints.read_config` of a Chronos-Bolt checkpoint: `ChronosBolt`'s
    keyword arguments and its `ChronosBoltConfig`."""
    kwargs, chronos = model_arguments(raw, config_path, ChronosBoltConfig, BOLT_CONFIG_KEYS)
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
        vocab_size=model.vocab_size,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        **shared_hf_fields(model),
    )
    if model.chronos_config.use_reg_token:
        config["reg_token_id"] = model.reg_token_id
    return config
