"""Checkpoint weight names ⇄ model variables: transformers' T5 names for the
dense model, the reference's for Chronos-Bolt's blocks, `moe.` for the experts
(`hf_weight_map`), and the checked copy of a checkpoint's tensors into a model
(`assign_hf_weights`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from chronos_moe.checkpoints_bolt import bolt_head_weights
from chronos_moe.errors import CheckpointError
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.moe.token_experts import TokenExperts

# Names transformers may write for the tied embedding; they alias `shared.weight`.
TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

# The router's balancing state: a checkpoint of an earlier version lacks it, and
# the fresh state (uniform load, zero bias) is what that router ran with.
MOE_OPTIONAL_WEIGHTS = (
    "moe.router.expert_load",
    "moe.router.selection_bias",
    "moe.router.feature_norm.statistics_initialised",
)


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
