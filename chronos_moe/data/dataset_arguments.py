"""The arguments of `ChronosDataset`, checked and resolved before any data is
read: its own settings' named errors, the tokenizer (or, for Chronos-Bolt,
the config) that fits the window lengths, and the refusal of ±inf targets."""

from __future__ import annotations

import dataclasses

from chronos_moe.config import ChronosBoltConfig, ChronosConfig
from chronos_moe.data.errors import DataError
from chronos_moe.tokenizer import MeanScaleUniformBins
from chronos_moe.validation import positive_int


def dataset_tokenizer(
    tokenizer: MeanScaleUniformBins | ChronosConfig | ChronosBoltConfig,
    context_length: int | None,
    prediction_length: int | None,
) -> tuple[MeanScaleUniformBins | None, ChronosConfig | ChronosBoltConfig]:
    """The tokenizer (`None` for Chronos-Bolt) and its config, rebuilt when the
    window lengths differ from the config's."""
    if isinstance(tokenizer, ChronosConfig):
        tokenizer = MeanScaleUniformBins.from_config(tokenizer)
    if not isinstance(tokenizer, (MeanScaleUniformBins, ChronosBoltConfig)):
        raise TypeError(
            "`tokenizer` must be a MeanScaleUniformBins, a ChronosConfig or a "
            f"ChronosBoltConfig. Received: {type(tokenizer).__name__}"
        )
    bolt = isinstance(tokenizer, ChronosBoltConfig)
    config = tokenizer if bolt else tokenizer.config
    overrides = {}
    if context_length is not None and context_length != config.context_length:
        overrides["context_length"] = context_length
    if prediction_length is not None and prediction_length != config.prediction_length:
        overrides["prediction_length"] = prediction_length
    if overrides:
        config = dataclasses.replace(config, **overrides)
        if not bolt:
            tokenizer = MeanScaleUniformBins(tokenizer.low_limit, tokenizer.high_limit, config)
    return (None, config) if bolt else (tokenizer, config)


def check_dataset_arguments(mode: str, batch_size: int, steps: int | None, drop_prob) -> None:
    """The named errors of `ChronosDataset`'s own settings."""
    if mode not in ("train", "validation"):
        raise ValueError(f"`mode` must be 'train' or 'validation'. Received: mode={mode!r}")
    positive_int("batch_size", batch_size)
    positive_int("steps", steps, allow_none=True)
    if mode == "validation" and drop_prob:
        raise ValueError(
            "Validation windows are not augmented: `drop_prob` applies to mode='train'. "
            f"Received: drop_prob={drop_prob!r}"
        )


def check_finite(sources: list) -> None:
    """A named error for the first source with ±inf targets."""
    for source in sources:
        if source.inf_count:
            raise DataError(
                f"{source.inf_count} non-finite value(s) (±inf) in the targets; expected "
                "finite numbers, with NaN for a missing value. Replace them with NaN, or pass "
                "allow_inf=True to read them as missing",
                path=source.name,
                field="target",
            )
