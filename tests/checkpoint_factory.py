"""Reference Chronos checkpoints for the tests, written by transformers itself.

`make_reference_checkpoint` builds a small `transformers.T5ForConditionalGeneration`
with a `chronos_config` block and saves it the way the released Chronos models are
stored (config.json + model.safetensors), so the reference `chronos` package and
transformers can load it next to chronos-moe.

Weights keep transformers' default initialisation (initializer_factor=1 gives logits of
O(1..20), large enough for parity errors to show) except the layer-norm scales, drawn
uniform(0.5, 1.5) so that a norm wired to the wrong place cannot hide behind all-ones.
Scaling every weight up instead makes T5 (no 1/sqrt(d) in attention) ill-conditioned:
float32 rounding alone would then exceed the 1e-5 tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

CHRONOS_DEFAULTS: dict[str, Any] = {
    "tokenizer_class": "MeanScaleUniformBins",
    "tokenizer_kwargs": {"low_limit": -15.0, "high_limit": 15.0},
    "n_special_tokens": 2,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "use_eos_token": True,
    "model_type": "seq2seq",
    "num_samples": 20,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
}


def make_reference_model(
    *,
    vocab_size: int = 4096,
    d_model: int = 32,
    d_kv: int = 8,
    d_ff: int = 64,
    num_layers: int = 2,
    num_decoder_layers: int | None = None,
    num_heads: int = 4,
    feed_forward_proj: str = "relu",
    tie_word_embeddings: bool = True,
    relative_attention_num_buckets: int = 32,
    relative_attention_max_distance: int = 128,
    separate_lm_head: bool = True,
    seed: int = 0,
    chronos_config: dict[str, Any] | None = None,
) -> transformers.T5ForConditionalGeneration:
    """A float32 transformers T5 in eval mode with random layer-norm scales.

    With `tie_word_embeddings=False` the model gets its own `lm_head` unless
    `separate_lm_head=False`, which keeps what transformers 5 builds as is: the
    shared embedding as head, without the d_model^-0.5 rescale."""
    config = transformers.T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        num_heads=num_heads,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=tie_word_embeddings,
        relative_attention_num_buckets=relative_attention_num_buckets,
        relative_attention_max_distance=relative_attention_max_distance,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    if chronos_config is not None:
        config.chronos_config = chronos_config
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).to(torch.float32).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
        if not tie_word_embeddings and separate_lm_head:
            # transformers 5 always ties lm_head to `shared` (T5Config forces
            # tie_word_embeddings=True and only drops the d_model^-0.5 rescale); a
            # T5 v1.1-style untied model has its own lm_head, so give it one. Its
            # scale is d_model^-0.5 (Mesh TF) rather than HF's 1.0, which would give
            # logits of O(50) whose float32 rounding alone exceeds 1e-5.
            head = torch.randn((vocab_size, d_model), generator=generator) * d_model**-0.5
            model.lm_head.weight = torch.nn.Parameter(head)
        elif not tie_word_embeddings:
            # The unscaled shared head: N(0, 1) embeddings would give logits of
            # O(15), where float32 rounding alone reaches 1e-5; scale them like
            # the separate head above.
            model.shared.weight.mul_(d_model**-0.5)
    return model


def chronos_config_block(
    vocab_size: int, context_length: int, prediction_length: int, **overrides: Any
) -> dict[str, Any]:
    """A full `chronos_config` block (every field the reference requires)."""
    block = {
        **CHRONOS_DEFAULTS,
        "n_tokens": vocab_size,
        "context_length": context_length,
        "prediction_length": prediction_length,
    }
    unknown = set(overrides) - set(block)
    if unknown:
        raise TypeError(f"Unknown chronos_config keys: {sorted(unknown)}")
    block.update(overrides)
    return block


def make_reference_checkpoint(
    directory,
    *,
    vocab_size: int = 4096,
    d_model: int = 32,
    d_kv: int = 8,
    d_ff: int = 64,
    num_layers: int = 2,
    num_decoder_layers: int | None = None,
    num_heads: int = 4,
    feed_forward_proj: str = "relu",
    tie_word_embeddings: bool = True,
    context_length: int = 32,
    prediction_length: int = 8,
    relative_attention_num_buckets: int = 32,
    relative_attention_max_distance: int = 128,
    separate_lm_head: bool = True,
    seed: int = 0,
    weights_dtype: torch.dtype = torch.float32,
    **chronos_overrides: Any,
) -> Path:
    """Saves a reference Chronos T5 checkpoint (transformers' `save_pretrained`,
    safetensors) into `directory` and returns it.

    `weights_dtype=torch.bfloat16` stores the weights in bfloat16, as some
    released checkpoints are. Extra keyword arguments override fields of the
    `chronos_config` block (e.g. `top_k=1`).
    """
    directory = Path(directory)
    model = make_reference_model(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        num_heads=num_heads,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=tie_word_embeddings,
        relative_attention_num_buckets=relative_attention_num_buckets,
        relative_attention_max_distance=relative_attention_max_distance,
        separate_lm_head=separate_lm_head,
        seed=seed,
        chronos_config=chronos_config_block(
            vocab_size, context_length, prediction_length, **chronos_overrides
        ),
    )
    model.to(weights_dtype).save_pretrained(directory, safe_serialization=True)
    return directory


def as_transformers4_layout(directory) -> Path:
    """Rewrites config.json the way transformers 4 (and the hub's Chronos and
    T5 v1.1 checkpoints) store it: `tie_word_embeddings` as the model has it and
    no `scale_decoder_outputs` key (a transformers 5 addition)."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    scale = config.pop("scale_decoder_outputs", True)
    config["tie_word_embeddings"] = bool(scale)
    path.write_text(json.dumps(config, indent=2))
    return Path(directory)


def load_reference_model(directory) -> transformers.T5ForConditionalGeneration:
    """transformers' float32 T5 of a checkpoint (transformers 5 may otherwise
    keep the stored dtype)."""
    model = transformers.T5ForConditionalGeneration.from_pretrained(
        str(directory), dtype=torch.float32
    )
    return model.eval()


def load_reference_pipeline(directory):
    """The reference `chronos.ChronosPipeline` of a checkpoint, in float32."""
    import chronos

    return chronos.ChronosPipeline.from_pretrained(str(directory), dtype=torch.float32)


def reference_logits(model, input_ids, attention_mask, decoder_input_ids=None, labels=None):
    """transformers' logits (and loss when `labels` are given) as numpy."""
    kwargs = {
        "input_ids": torch.as_tensor(np.asarray(input_ids), dtype=torch.long),
        "attention_mask": torch.as_tensor(np.asarray(attention_mask), dtype=torch.long),
    }
    if decoder_input_ids is not None:
        kwargs["decoder_input_ids"] = torch.as_tensor(
            np.asarray(decoder_input_ids), dtype=torch.long
        )
    if labels is not None:
        kwargs["labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    with torch.no_grad():
        output = model(**kwargs)
    loss = None if output.loss is None else float(output.loss)
    return output.logits.numpy(), loss


def compiled_forward(model):
    """`inputs dict -> numpy logits` of a ChronosT5, compiled once per input
    structure with the library's own `compile_stateless` (jax.jit on JAX, which
    compiles a whole forward pass faster than eager JAX compiles its ops one by
    one; eager without autograd on torch)."""
    from keras import ops

    from chronos_moe import backend

    function = backend.compile_stateless(model, lambda inputs: model(inputs))

    def forward(**inputs):
        tensors = {name: ops.convert_to_tensor(np.asarray(value)) for name, value in inputs.items()}
        return ops.convert_to_numpy(function(tensors))

    return forward


def make_bolt_reference_checkpoint(
    directory,
    *,
    d_model: int = 32,
    d_kv: int = 8,
    d_ff: int = 64,
    num_layers: int = 2,
    num_decoder_layers: int | None = None,
    num_heads: int = 4,
    feed_forward_proj: str = "relu",
    context_length: int = 64,
    prediction_length: int = 8,
    input_patch_size: int = 16,
    input_patch_stride: int | None = None,
    quantiles: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    use_reg_token: bool = True,
    seed: int = 0,
) -> Path:
    """Saves a reference Chronos-Bolt checkpoint, built and written by the
    reference's own `ChronosBoltModelForForecasting` (`save_pretrained`,
    safetensors), into `directory` and returns it.

    Every weight is drawn here rather than left to the library's
    initialisation (which differs between transformers versions): the T5 stacks
    as transformers initialises them, layer-norm scales uniform(0.5, 1.5), the
    residual blocks' kernels N(0, 1/fan_in) and their biases N(0, 0.3²), so
    that the standardised forecasts are O(1..10) and a wrong bias or a norm
    wired to the wrong place shows.
    """
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    config = transformers.T5Config(
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        num_heads=num_heads,
        feed_forward_proj=feed_forward_proj,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    config.chronos_config = {
        "context_length": context_length,
        "prediction_length": prediction_length,
        "input_patch_size": input_patch_size,
        "input_patch_stride": input_patch_size
        if input_patch_stride is None
        else input_patch_stride,
        "quantiles": list(quantiles),
        "use_reg_token": use_reg_token,
    }
    config.chronos_pipeline_class = "ChronosBoltPipeline"
    torch.manual_seed(seed)
    model = ChronosBoltModelForForecasting(config).to(torch.float32).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            elif "patch_embedding" in name and name.endswith(".weight"):
                fan_in = parameter.shape[1]
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * fan_in**-0.5)
            elif "patch_embedding" in name and name.endswith(".bias"):
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
            elif name == "shared.weight":
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def load_bolt_reference_pipeline(directory):
    """The reference `chronos.ChronosBoltPipeline` of a checkpoint, in float32
    (transformers 5 may otherwise keep the stored dtype or load bfloat16)."""
    import chronos

    return chronos.BaseChronosPipeline.from_pretrained(str(directory), torch_dtype=torch.float32)
