"""Chronos configuration: the ``chronos_config`` block of a checkpoint and the
T5 size presets of the released models."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from chronos_moe.validation import positive_int

# The quantiles a forecast reports unless asked for others: the package's one source.
DEFAULT_QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class ChronosConfig:
    """The ``chronos_config`` block of a Chronos checkpoint's ``config.json``.

    It configures the tokenizer (`MeanScaleUniformBins`) and the forecasting
    defaults. Field names and meanings are the reference implementation's.

    Example:

    >>> config = ChronosConfig(context_length=64, prediction_length=8)
    >>> config.n_tokens, config.tokenizer_kwargs["low_limit"]
    (4096, -15.0)
    """

    tokenizer_class: str = "MeanScaleUniformBins"
    tokenizer_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"low_limit": -15.0, "high_limit": 15.0}
    )
    context_length: int = 512
    prediction_length: int = 64
    n_tokens: int = 4096
    n_special_tokens: int = 2
    pad_token_id: int = 0
    eos_token_id: int = 1
    use_eos_token: bool = True
    model_type: Literal["seq2seq"] = "seq2seq"
    num_samples: int = 20
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.tokenizer_class != "MeanScaleUniformBins":
            raise ValueError(
                "chronos-moe supports tokenizer_class='MeanScaleUniformBins'. "
                f"Received: tokenizer_class={self.tokenizer_class!r}"
            )
        if self.model_type != "seq2seq":
            raise ValueError(
                "chronos-moe loads Chronos T5 models, whose chronos_config has "
                f"model_type='seq2seq'. Received: model_type={self.model_type!r}"
            )
        for name in ("context_length", "prediction_length", "num_samples", "top_k"):
            positive_int(name, getattr(self, name))
        if self.n_tokens <= self.n_special_tokens + 1:
            raise ValueError(
                f"`n_tokens` must exceed n_special_tokens + 1 = {self.n_special_tokens + 1}. "
                f"Received: n_tokens={self.n_tokens}"
            )
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.n_special_tokens:
                raise ValueError(
                    f"`{name}` must be a special token id in [0, {self.n_special_tokens}). "
                    f"Received: {name}={value}"
                )
        kwargs = dict(self.tokenizer_kwargs)
        if (
            set(kwargs) != {"low_limit", "high_limit"}
            or not kwargs["low_limit"] < kwargs["high_limit"]
        ):
            raise ValueError(
                "`tokenizer_kwargs` must be {'low_limit': a, 'high_limit': b} with a < b. "
                f"Received: tokenizer_kwargs={kwargs!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1]. Received: top_p={self.top_p}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ChronosConfig:
        """Builds the config from a ``chronos_config`` dict, naming unknown keys.

        The block of a Chronos-Bolt or Chronos-2 checkpoint is refused as such
        (`check_model_family`), not as a list of unknown keys.
        """
        check_model_family({"chronos_config": values})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown keys in chronos_config: {unknown}. Expected a subset of {sorted(known)}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ChronosBoltConfig:
    """The ``chronos_config`` block of a Chronos-Bolt checkpoint's ``config.json``.

    Field names and meanings are the reference implementation's
    (`chronos.chronos_bolt.ChronosBoltConfig`): the series is cut into patches
    of `input_patch_size` values every `input_patch_stride` steps, and the
    model forecasts the `quantiles` of the next `prediction_length` steps at once.

    Example:

    >>> config = ChronosBoltConfig.from_dict({
    ...     "context_length": 64, "prediction_length": 8, "input_patch_size": 16,
    ...     "input_patch_stride": 16, "quantiles": [0.1, 0.5, 0.9], "use_reg_token": True})
    >>> config.quantiles, config.use_reg_token
    ((0.1, 0.5, 0.9), True)
    """

    context_length: int = 2048
    prediction_length: int = 64
    input_patch_size: int = 16
    input_patch_stride: int = 16
    quantiles: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    use_reg_token: bool = False

    def __post_init__(self) -> None:
        for name in (
            "context_length",
            "prediction_length",
            "input_patch_size",
            "input_patch_stride",
        ):
            positive_int(name, getattr(self, name))
        quantiles = self.quantiles
        if (
            isinstance(quantiles, (str, bytes))
            or not isinstance(quantiles, (list, tuple))
            or not quantiles
            or not all(
                isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1
                for q in quantiles
            )
        ):
            raise ValueError(
                "`quantiles` must be a non-empty list of numbers in (0, 1), such as "
                f"[0.1, 0.5, 0.9]. Received: quantiles={quantiles!r}"
            )
        if list(quantiles) != sorted(set(quantiles)):
            raise ValueError(
                "`quantiles` must be increasing, without repeats. "
                f"Received: quantiles={list(quantiles)!r}"
            )
        object.__setattr__(self, "quantiles", tuple(float(q) for q in quantiles))
        if not isinstance(self.use_reg_token, bool):
            raise ValueError(
                f"`use_reg_token` must be a bool. Received: use_reg_token={self.use_reg_token!r}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ChronosBoltConfig:
        """Builds the config from a ``chronos_config`` dict, naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown keys in the Chronos-Bolt chronos_config: {unknown}. "
                f"Expected a subset of {sorted(known)}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["quantiles"] = list(self.quantiles)
        return values


# How the reference's model families show in a checkpoint's config.json: their
# `architectures`, `chronos_pipeline_class` and `chronos_config` keys (ChronosBoltConfig
# and the Chronos-2 forecasting config); both read patches of the series and output quantiles.
OTHER_FAMILIES: dict[str, dict[str, frozenset[str]]] = {
    "Chronos-2": {
        "names": frozenset({"Chronos2Model", "Chronos2Pipeline"}),
        "keys": frozenset({"output_patch_size", "max_output_patches", "use_arcsinh"}),
    },
    "Chronos-Bolt": {
        "names": frozenset({"ChronosBoltModelForForecasting", "ChronosBoltPipeline"}),
        "keys": frozenset({"input_patch_size", "input_patch_stride", "quantiles", "use_reg_token"}),
    },
}
# The families chronos-moe loads; the others are refused by name.
SUPPORTED_FAMILIES = ("Chronos-T5", "Chronos-Bolt")


def model_family(config: dict[str, Any]) -> str:
    """The model family of a checkpoint's `config.json`: `"Chronos-T5"` or
    `"Chronos-Bolt"`; a `ValueError` naming Chronos-2, which is not supported.

    Looks at the top-level `architectures` and `chronos_pipeline_class` and at
    the keys of the `chronos_config` block (Chronos-2 is checked first: its
    block has the Bolt keys too). A config with none of these marks is T5.

    Args:
        config: dict. A checkpoint's `config.json`, or `{"chronos_config": block}`.

    Example:

    >>> model_family({"architectures": ["T5ForConditionalGeneration"]})
    'Chronos-T5'
    >>> model_family({"architectures": ["ChronosBoltModelForForecasting"]})
    'Chronos-Bolt'
    >>> model_family({"architectures": ["Chronos2Model"]})
    Traceback (most recent call last):
    ...
    ValueError: Chronos-2 checkpoints are not supported yet: ...
    """
    architectures = config.get("architectures")
    named = [*architectures] if isinstance(architectures, list) else []
    named.append(config.get("chronos_pipeline_class"))
    classes = {name for name in named if isinstance(name, str)}
    block = config.get("chronos_config")
    keys = set(block) if isinstance(block, dict) else set()
    for family, marks in OTHER_FAMILIES.items():
        evidence = {
            "model classes": classes & marks["names"],
            "chronos_config keys": keys & marks["keys"],
        }
        for where, found in evidence.items():
            if found and family in SUPPORTED_FAMILIES:
                return family
            if found:
                raise ValueError(
                    f"{family} checkpoints are not supported yet: chronos-moe loads Chronos T5 "
                    "(amazon/chronos-t5-*) and Chronos-Bolt (amazon/chronos-bolt-*) "
                    f"checkpoints and models trained from them. Received: {where} {sorted(found)}"
                )
    return "Chronos-T5"


def check_model_family(config: dict[str, Any], expected: str = "Chronos-T5") -> None:
    """A `ValueError` unless `config` (a `config.json`, or `{"chronos_config":
    block}`) is of the `expected` family (see `model_family`), naming the
    family it is of.

    Example:

    >>> check_model_family({"architectures": ["T5ForConditionalGeneration"]})
    >>> check_model_family({"architectures": ["ChronosBoltModelForForecasting"]})
    Traceback (most recent call last):
    ...
    ValueError: Expected a Chronos-T5 config. Received: a Chronos-Bolt config ...
    """
    family = model_family(config)
    if family != expected:
        hint = {
            "Chronos-Bolt": "load it with ChronosBolt / ChronosBoltConfig",
            "Chronos-T5": "load it with ChronosT5 / ChronosConfig",
        }[family]
        raise ValueError(
            f"Expected a {expected} config. Received: a {family} config ({hint}; "
            "`ChronosPipeline.from_pretrained` chooses by itself)."
        )


# Shapes of the `google/t5-efficient-*` configs the released Chronos models were
# initialised from (the Chronos paper, Table 6 of its appendix, and the published
# config.json files). Every size uses relu feed-forward and tied embeddings.
T5_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=256, d_ff=1024, num_layers=4, num_heads=4, d_kv=64),
    "mini": dict(d_model=384, d_ff=1536, num_layers=4, num_heads=8, d_kv=32),
    "small": dict(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64),
    "base": dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64),
    "large": dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64),
}
