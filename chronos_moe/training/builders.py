"""What a training run is made of, built from its `TrainingConfig`: the
model (`build_model`: Chronos T5 or Chronos-Bolt, fresh or pretrained, wrapped
in experts when `use_moe`), the optimizer (`build_optimizer`) and the stream of
windows (`build_dataset`)."""

from __future__ import annotations

import dataclasses

import keras

from chronos_moe import checkpoints
from chronos_moe.config import T5_PRESETS
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
from chronos_moe.training.config import ConfigError, TrainingConfig
from chronos_moe.training.resume import BOLT_RESUME_KEYS
from chronos_moe.training.schedules import WarmupSchedule


def build_model(config: TrainingConfig) -> ChronosT5 | ChronosBolt | ChronosMoE:
    """A fresh (size preset) or pretrained (`model_id`) Chronos T5 or
    Chronos-Bolt model (`model_family`), wrapped in experts when `use_moe`."""
    keras.utils.set_random_seed(config.seed)
    base = _bolt_model(config) if config.model_family == "bolt" else _t5_model(config)
    if not config.use_moe:
        return base
    return build_moe_chronos(
        base,
        num_experts=config.num_experts,
        top_k=config.num_active_experts,
        load_balancing_weight=config.load_balancing_weight,
        router_hidden_dim=config.router_hidden_dim,
        expert_hidden_dim=config.expert_hidden_dim,
        freeze_base=config.freeze_base,
        router_z_loss_weight=config.router_z_loss_weight,
        router_jitter_noise=config.router_jitter_noise,
        seed=config.seed,
        router_input_norm=config.router_input_norm,
        load_balancing_mode=config.load_balancing_mode,
        load_balancing_window=config.load_balancing_window,
        level=config.moe_level,
        moe_every=config.moe_every,
        shared_expert=config.shared_expert,
        bias_update_rate=config.bias_update_rate,
    )


def _t5_model(config: TrainingConfig) -> ChronosT5 | ChronosMoE:
    """`build_model`'s model before the experts, for `model_family: t5`."""
    chronos = config.forecasting_config
    if config.random_init:
        base = ChronosT5.from_preset(
            config.model_size,
            vocab_size=config.n_tokens,
            tie_word_embeddings=config.tie_embeddings,
            initializer_factor=config.initializer_factor,
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
            chronos_config=chronos.to_dict(),
        )
    else:
        base = checkpoints.load_chronos(config.model_id)
        if not isinstance(base, (ChronosT5, ChronosMoE)):
            raise ConfigError(
                f"`model_id` {config.model_id!r} is a {type(base).__name__} checkpoint; "
                "set `model_family: bolt` to train it (model_family='t5' trains Chronos T5)."
            )
        if isinstance(base, ChronosMoE):
            raise ConfigError(
                f"`model_id` {config.model_id!r} is already a ChronosMoE model; "
                "continue training it with `use_moe: false` or start from a dense checkpoint."
            )
        if base.vocab_size != config.n_tokens:
            raise ConfigError(
                f"`n_tokens` must match the checkpoint's vocabulary. "
                f"Received: n_tokens={config.n_tokens}, checkpoint vocab_size={base.vocab_size}"
            )
        base.chronos_config = chronos
    return base


def _bolt_model(config: TrainingConfig) -> ChronosBolt | ChronosMoE:
    """`build_model` for `model_family: bolt`: a size preset with the config's
    `chronos_config`, or the `model_id` checkpoint, whose patches, quantile
    levels and horizon the config must not contradict (its context length is
    the config's)."""
    if config.random_init:
        return ChronosBolt(
            **T5_PRESETS[config.model_size],
            initializer_factor=config.initializer_factor,
            chronos_config=config.chronos_config,
        )
    model = checkpoints.load_chronos(config.model_id)
    dense = model.base if isinstance(model, ChronosMoE) else model
    if not isinstance(dense, ChronosBolt):
        raise ConfigError(
            f"`model_id` {config.model_id!r} is a {type(model).__name__} checkpoint; "
            "model_family='bolt' trains Chronos-Bolt checkpoints (set `model_family: t5`)."
        )
    if dense is not model and config.use_moe:
        raise ConfigError(
            f"`model_id` {config.model_id!r} is already a ChronosMoE model; "
            "continue training it with `use_moe: false` or start from a dense checkpoint."
        )
    own = dense.chronos_config.to_dict()
    clashes = [
        f"{key}={value!r} (checkpoint: {own[key]!r})"
        for key, value in config.chronos_config.items()
        if key in BOLT_RESUME_KEYS and value != own[key]
    ]
    if config.prediction_length > own["prediction_length"]:
        clashes.append(
            f"prediction_length={config.prediction_length} (checkpoint: at most "
            f"{own['prediction_length']}; shorter targets are padded as the reference does)"
        )
    if clashes:
        raise ConfigError(
            f"The config contradicts the Chronos-Bolt checkpoint {config.model_id!r}: "
            + "; ".join(clashes)
        )
    dense.chronos_config = dataclasses.replace(
        dense.chronos_config, context_length=config.context_length
    )
    return model


def build_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """AdamW with the reference trainer's defaults and schedule."""
    schedule = WarmupSchedule(
        config.learning_rate,
        total_steps=config.max_steps,
        warmup_steps=int(config.warmup_ratio * config.max_steps),
        kind=config.lr_scheduler_type,
    )
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        global_clipnorm=config.max_grad_norm or None,
        gradient_accumulation_steps=(
            config.gradient_accumulation_steps if config.gradient_accumulation_steps > 1 else None
        ),
    )


def build_dataset(config: TrainingConfig, mode: str = "train", paths=None):
    """The training (or validation) stream of windows: tokenized for Chronos T5,
    values for Chronos-Bolt."""
    from chronos_moe.data import ChronosDataset

    return ChronosDataset(
        paths or config.training_data_paths,
        config.forecasting_config,
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        batch_size=config.per_device_train_batch_size,
        probability=config.probability if paths is None else None,
        min_past=config.min_past,
        max_missing_prop=config.max_missing_prop,
        shuffle_buffer_length=config.shuffle_buffer_length,
        mode=mode,
        seed=config.seed,
    )
