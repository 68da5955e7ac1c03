"""Training configuration: the reference training script's YAML fields plus the
model family (Chronos T5 or Chronos-Bolt), Mixture-of-Experts and backend fields,
validated before anything is built."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from chronos_moe.config import T5_PRESETS, ChronosBoltConfig, ChronosConfig
from chronos_moe.validation import PROCESS_ENVIRONMENT, check_mesh_shape, cluster_settings

SCHEDULERS = ("linear", "cosine", "constant")
# The sizes of the ("batch", "expert") device mesh, keys of `distribution:`.
MESH_KEYS = ("data_parallel", "expert_parallel")
# The keys of `distribution:`: the mesh, and the processes of a multi-host run
# (each of those may come from Keras' environment variable instead).
DISTRIBUTION_KEYS = (*MESH_KEYS, *PROCESS_ENVIRONMENT)
MODEL_FAMILIES = ("t5", "bolt")
# The keys that only one model family reads: Chronos T5's tokenizer, sampling and
# tied head; Chronos-Bolt's patches and quantile levels (its `chronos_config`).
T5_ONLY_KEYS = (
    "tie_embeddings",
    "tokenizer_class",
    "tokenizer_kwargs",
    "n_tokens",
    "n_special_tokens",
    "pad_token_id",
    "eos_token_id",
    "use_eos_token",
    "num_samples",
    "temperature",
    "top_k",
    "top_p",
)
BOLT_ONLY_KEYS = ("input_patch_size", "input_patch_stride", "quantiles", "use_reg_token")


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key."""


# The settings that must be integers > 0.
_POSITIVE = (
    "context_length",
    "prediction_length",
    "max_steps",
    "save_steps",
    "log_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "n_tokens",
    "num_samples",
    "top_k",
    "num_experts",
    "num_active_experts",
    "router_hidden_dim",
    "load_balancing_window",
    "moe_every",
)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run needs, with the reference script's defaults.

    Keys and meanings follow the Chronos reference training script
    (`scripts/training/train.py`); `model_family`, the Chronos-Bolt keys, the
    MoE keys and `backend` are ours. `model_family: bolt` trains a Chronos-Bolt
    model on the quantile loss: it reads `input_patch_size`,
    `input_patch_stride`, `quantiles` and `use_reg_token` (`null`: the start
    checkpoint's, or the reference's defaults) and refuses the T5-only keys
    (`T5_ONLY_KEYS`: tokenizer, sampling, tied head), as a T5 config refuses the
    Bolt keys. Read a YAML file with `TrainingConfig.from_yaml(path)`: unknown
    keys and values of the wrong type are errors that name the key.

    Example:

    >>> config = TrainingConfig(training_data_paths=["a.arrow"], probability=[1.0])
    >>> config.context_length, config.learning_rate, config.use_moe
    (512, 0.001, False)
    """

    # Data.
    training_data_paths: list[str] = dataclasses.field(default_factory=list)
    probability: list[float] | None = None
    validation_data_paths: list[str] | None = None
    context_length: int = 512
    prediction_length: int = 64
    min_past: int = 64
    max_missing_prop: float = 0.9
    shuffle_buffer_length: int = 100
    # Optimisation.
    max_steps: int = 200_000
    save_steps: int = 50_000
    log_steps: int = 500
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: bool = False
    seed: int = 42
    # Model.
    model_family: Literal["t5", "bolt"] = "t5"
    model_id: str = "google/t5-efficient-tiny"
    model_type: Literal["seq2seq"] = "seq2seq"
    random_init: bool = True
    tie_embeddings: bool = True
    initializer_factor: float = 0.05
    # Tokenizer and forecasting defaults (the checkpoint's chronos_config).
    tokenizer_class: Literal["MeanScaleUniformBins"] = "MeanScaleUniformBins"
    tokenizer_kwargs: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"low_limit": -15.0, "high_limit": 15.0}
    )
    n_tokens: int = 4096
    n_special_tokens: int = 2
    pad_token_id: int = 0
    eos_token_id: int = 1
    use_eos_token: bool = True
    num_samples: int = 20
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    # Chronos-Bolt forecasting (the checkpoint's chronos_config; null: the start
    # checkpoint's, or the reference's default).
    input_patch_size: int | None = None
    input_patch_stride: int | None = None
    quantiles: list[float] | None = None
    use_reg_token: bool | None = None
    # Mixture of experts.
    use_moe: bool = False
    moe_level: Literal["series", "token"] = "series"
    moe_every: int = 1
    shared_expert: bool = True
    num_experts: int = 4
    num_active_experts: int = 2
    load_balancing_weight: float = 0.01
    router_z_loss_weight: float = 0.0
    router_hidden_dim: int = 128
    expert_hidden_dim: int | None = None
    router_jitter_noise: float = 0.0
    freeze_base: bool = False
    router_input_norm: bool = True
    load_balancing_mode: Literal["loss", "bias", "loss_and_bias"] = "loss_and_bias"
    load_balancing_window: int = 10
    bias_update_rate: float = 1e-2
    max_expert_share: float = 0.9
    # Run.
    output_dir: str = "./output/"
    save_total_limit: int | None = None
    backend: Literal["torch", "jax"] | None = None
    # Several devices (JAX): {data_parallel: N, expert_parallel: M}, see
    # `chronos_moe.distribution`; `per_device_train_batch_size` is then the global batch.
    # Several processes (hosts) add {coordinator_address: "host:port", num_processes: P,
    # process_id: i}, or set Keras' KERAS_DISTRIBUTION_* variables (docs/scaling.md).
    distribution: dict[str, int | str] | None = None
    # Non-finite losses.
    nan_policy: Literal["abort", "skip"] = "abort"
    max_consecutive_nan_skips: int = 5

    def __post_init__(self) -> None:
        self._check_family_type()
        self._check_types()
        changed = {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != _default(f)}
        _check_family(self.model_family, changed)
        self._check_numbers()
        self._check_data()
        self._check_run()
        self._check_distribution()

    def _check_family_type(self) -> None:
        if self.model_family not in MODEL_FAMILIES:
            _fail(
                "model_family",
                self.model_family,
                f"one of {', '.join(map(repr, MODEL_FAMILIES))} (Chronos T5 or Chronos-Bolt)",
            )

    def _check_types(self) -> None:
        """Every field against its annotation."""
        for name, annotation in typing.get_type_hints(type(self)).items():
            if not _matches(getattr(self, name), annotation):
                value = getattr(self, name)
                raise ConfigError(
                    f"`{name}` must be of type {_describe(annotation)}. "
                    f"Received: {name}={value!r} ({type(value).__name__})"
                )

    def _check_numbers(self) -> None:
        """The ranges of the numeric settings."""
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                _fail(name, getattr(self, name), "a positive integer")
        if self.min_past < 1:
            _fail("min_past", self.min_past, "an integer >= 1")
        if self.shuffle_buffer_length < 0:
            _fail("shuffle_buffer_length", self.shuffle_buffer_length, "an integer >= 0")
        for name in ("learning_rate", "temperature", "initializer_factor", "bias_update_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                _fail(name, value, "a finite number > 0")
        for name in ("weight_decay", "load_balancing_weight", "router_z_loss_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                _fail(name, value, "a finite number >= 0")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            _fail(
                "max_grad_norm", self.max_grad_norm, "a finite number >= 0 (0 turns clipping off)"
            )
        for name in ("warmup_ratio", "max_missing_prop", "router_jitter_noise"):
            value = getattr(self, name)
            if not (0 <= value <= 1):
                _fail(name, value, "a number in [0, 1]")
        if not 0 < self.top_p <= 1:
            _fail("top_p", self.top_p, "a number in (0, 1]")
        if self.num_active_experts > self.num_experts:
            raise ConfigError(
                "`num_active_experts` must be <= `num_experts`. Received: "
                f"num_active_experts={self.num_active_experts}, num_experts={self.num_experts}"
            )

    def _check_data(self) -> None:
        """The training files, their sampling probabilities and the model to start from."""
        if not self.training_data_paths:
            _fail("training_data_paths", self.training_data_paths, "a non-empty list of files")
        if self.probability is not None:
            if len(self.probability) != len(self.training_data_paths):
                raise ConfigError(
                    "`probability` needs one entry per training data path: "
                    f"{len(self.training_data_paths)} paths, "
                    f"{len(self.probability)} probabilities. "
                    f"Received: probability={self.probability}"
                )
            if any(not (math.isfinite(p) and p >= 0) for p in self.probability):
                _fail("probability", self.probability, "finite numbers >= 0")
            if abs(sum(self.probability) - 1.0) > 1e-6:
                _fail("probability", self.probability, "numbers that sum to 1")
        if self.random_init and self.model_size is None:
            raise ConfigError(
                "With `random_init: true`, `model_id` must name a size preset "
                f"({sorted(T5_PRESETS)}) or 'google/t5-efficient-<size>'. "
                f"Received: model_id={self.model_id!r}"
            )

    def _check_run(self) -> None:
        """The run's limits and the `chronos_config` block."""
        if not (math.isfinite(self.max_expert_share) and 0 < self.max_expert_share <= 1):
            _fail("max_expert_share", self.max_expert_share, "a number in (0, 1]")
        if self.max_consecutive_nan_skips < 1:
            _fail("max_consecutive_nan_skips", self.max_consecutive_nan_skips, "an integer >= 1")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            _fail("save_total_limit", self.save_total_limit, "an integer >= 1 or null")
        try:  # the tokenizer and forecasting block, checked now rather than when the model is built
            _ = self.forecasting_config
        except (ValueError, TypeError) as error:
            raise ConfigError(str(error)) from error

    def _check_distribution(self) -> None:
        """The mesh sizes: known keys, positive integers, `expert_parallel`
        dividing `num_experts` and `data_parallel` the batch. The backend and
        the devices present are checked when the run starts."""
        if self.distribution is None:
            return
        unknown = sorted(set(self.distribution) - set(DISTRIBUTION_KEYS))
        if unknown:
            raise ConfigError(
                f"Unknown `distribution` key(s) {unknown}. "
                f"{_suggestions(unknown, set(DISTRIBUTION_KEYS))}"
                f"It takes {', '.join(DISTRIBUTION_KEYS)}. "
                f"Received: distribution={self.distribution}"
            )
        sizes = {key: self.distribution.get(key, 1) for key in MESH_KEYS}
        if sizes["expert_parallel"] > 1 and not self.use_moe:
            raise ConfigError(
                "`distribution.expert_parallel` > 1 splits experts, and this run has none "
                f"(`use_moe: false`). Received: distribution={self.distribution}"
            )
        try:
            check_mesh_shape(
                **sizes,
                num_experts=self.num_experts if self.use_moe else None,
                batch_size=self.per_device_train_batch_size,
            )
            # The process keys as written (the environment is read when the run starts).
            cluster_settings(self.distribution, self.per_device_train_batch_size, environ={})
        except ValueError as error:
            raise ConfigError(
                f"`distribution`: {error} (per_device_train_batch_size is the global batch)"
            ) from error

    @property
    def mesh_shape(self) -> tuple[int, int] | None:
        """`(data_parallel, expert_parallel)` of `distribution`, `None` without one."""
        if self.distribution is None:
            return None
        return tuple(self.distribution.get(key, 1) for key in MESH_KEYS)

    @property
    def model_size(self) -> str | None:
        """The size preset named by `model_id` (`tiny`, `google/t5-efficient-tiny`)."""
        name = self.model_id.rsplit("/", 1)[-1].removeprefix("t5-efficient-")
        return name if name in T5_PRESETS else None

    @property
    def chronos_config(self) -> dict[str, Any]:
        """The `chronos_config` block this run's checkpoints carry: the
        `ChronosConfig` fields, or with `model_family: bolt` the
        `ChronosBoltConfig` fields (the reference's defaults where `null`),
        which this config repeats under the same names."""
        if self.model_family == "bolt":
            names = ("context_length", "prediction_length", *BOLT_ONLY_KEYS)
            values = {name: getattr(self, name) for name in names}
            return {name: copy.deepcopy(v) for name, v in values.items() if v is not None}
        return {
            field.name: copy.deepcopy(getattr(self, field.name))
            for field in dataclasses.fields(ChronosConfig)
        }

    @property
    def forecasting_config(self) -> ChronosConfig | ChronosBoltConfig:
        """`chronos_config`, checked: a `ChronosConfig` or, with `model_family:
        bolt`, a `ChronosBoltConfig`."""
        if self.model_family == "bolt":
            return ChronosBoltConfig.from_dict(self.chronos_config)
        return ChronosConfig.from_dict(self.chronos_config)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        if not isinstance(values, dict):
            raise ConfigError(
                "A training config is a mapping of keys to values. "
                f"Received: {type(values).__name__}"
            )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            raise ConfigError(
                f"Unknown config key(s) {unknown}. {_suggestions(unknown, known)}"
                "The configuration reference (docs/configuration.md) lists every key."
            )
        family = values.get("model_family", "t5")
        if family in MODEL_FAMILIES:  # also keys given with their default value
            given = {key for key, value in values.items() if value is not None}
            _check_family(family, given)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainingConfig:
        """Reads and validates a YAML config file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"Cannot read config file {str(path)!r}: {error.strerror}") from error
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        try:
            return cls.from_dict(values or {})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """Every key of this config's model family (not the other family's)."""
        foreign = BOLT_ONLY_KEYS if self.model_family == "t5" else T5_ONLY_KEYS
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in foreign}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def fingerprint(self, keys: tuple[str, ...]) -> str:
        """A short hash of the given keys' values (to refuse incompatible resumes)."""
        chosen = {key: getattr(self, key) for key in keys}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _suggestions(unknown: list[Any], known: set[str]) -> str:
    """`Did you mean ...?` for each unknown key close to a known one, else ''."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
        if close:
            hints.append(f"`{close[0]}`" if len(unknown) == 1 else f"`{close[0]}` for `{key}`")
    return f"Did you mean {', '.join(hints)}? " if hints else ""


def _fail(name: str, value: Any, expected: str) -> typing.NoReturn:
    raise ConfigError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def _check_family(model_family: str, given: set[str]) -> None:
    """A named error for a key `given` that the other model family reads."""
    other = BOLT_ONLY_KEYS if model_family == "t5" else T5_ONLY_KEYS
    foreign = [key for key in other if key in given]
    if foreign:
        owner = "Chronos-Bolt" if model_family == "t5" else "Chronos T5"
        raise ConfigError(
            f"{foreign} apply to {owner} models only; this config trains "
            f"model_family={model_family!r}. Remove them, or set `model_family: "
            f"{'bolt' if model_family == 't5' else 't5'}`."
        )


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _describe(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if origin is Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(expected)
        return isinstance(value, dict) and all(
            _matches(k, key_type) and _matches(v, value_type) for k, v in value.items()
        )
    return isinstance(value, expected)
