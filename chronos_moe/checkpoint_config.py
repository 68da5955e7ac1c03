"""What a Chronos checkpoint's `config.json` holds besides the weights: the
model arguments it stores (transformers' `T5Config` names) for Chronos T5 and
Chronos-Bolt, the `chronos_moe_config` block of a `ChronosMoE`, and the fields
every Chronos checkpoint writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chronos_moe.config import ChronosBoltConfig, ChronosConfig
from chronos_moe.errors import CheckpointError
from chronos_moe.models.t5_stacks import STACK_SETTINGS

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

# ChronosBolt arguments read from config.json: the T5 stacks' settings (its
# vocabulary follows `use_reg_token`, and it has no token ids of T5's tokens).
BOLT_CONFIG_KEYS = STACK_SETTINGS
# ChronosT5 arguments read from config.json (transformers' T5Config names).
T5_CONFIG_KEYS = (
    "vocab_size",
    *STACK_SETTINGS,
    "tie_word_embeddings",
    "pad_token_id",
    "eos_token_id",
)


def model_arguments(
    raw: dict[str, Any],
    config_path: Path,
    config_class: type[ChronosConfig] | type[ChronosBoltConfig],
    keys: tuple[str, ...],
) -> tuple[dict[str, Any], ChronosConfig | ChronosBoltConfig]:
    """The model's keyword arguments among `keys` (those set and not null) in a
    `config.json`, and its `chronos_config` block read as `config_class`, or a
    `CheckpointError` naming the file.

    Example:

    >>> raw = {"d_model": 8, "d_ff": None, "chronos_config": {"n_tokens": 64}}
    >>> kwargs, chronos = model_arguments(raw, Path("config.json"), ChronosConfig, ("d_model",))
    >>> kwargs, chronos.n_tokens
    ({'d_model': 8}, 64)
    """
    try:
        chronos = config_class.from_dict(raw["chronos_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid `chronos_config`: {error}") from None
    kwargs = {key: raw[key] for key in keys if key in raw and raw[key] is not None}
    return kwargs, chronos


def shared_hf_fields(model: Any) -> dict[str, Any]:
    """The `config.json` fields of a Chronos T5 or Chronos-Bolt checkpoint
    besides its arguments: transformers' T5 markers, the activation it derives
    from `feed_forward_proj`, and the `chronos_config` block."""
    return dict(
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
