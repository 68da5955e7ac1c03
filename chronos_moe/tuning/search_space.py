"""The search space of a tuning study: which `TrainingConfig` keys a trial
samples and from which ranges, written as a mapping (or a YAML file) and
checked against the base config before any model is built.

No Optuna import here: a bad space is reported without the `tune` extra.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from chronos_moe.training.config import ConfigError, TrainingConfig

KINDS = ("int", "float", "categorical")

# The config keys a tuning study may sample. `top_k` (the experts each series
# uses) is `num_active_experts`; its upper bound is the trial's `num_experts`.
TOP_K = "num_active_experts"
MOE_KEYS = (
    "num_experts",
    TOP_K,
    "load_balancing_weight",
    "router_z_loss_weight",
    "load_balancing_mode",
    "router_hidden_dim",
    "expert_hidden_dim",
    "router_jitter_noise",
    "bias_update_rate",
    "moe_level",  # token-level experts, when the config knows the key
)


class SearchSpaceError(ConfigError):
    """A search space that cannot be sampled; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One sampled config key.

    Args:
        kind: str. `"int"`, `"float"` or `"categorical"`.
        low: number. The lower end of an `int` or `float` range (included).
        high: number. The upper end of an `int` or `float` range (included).
        log: bool. Sample `int`/`float` on a log scale. Defaults to `False`.
        choices: list. The values of a `categorical` dimension.

    Example:

    >>> Dimension.from_dict("learning_rate", {"type": "float", "low": 1e-4, "high": 1e-2,
    ...     "log": True}).high
    0.01
    """

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @classmethod
    def from_dict(cls, name: str, spec: Any) -> Dimension:
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(
                f"`{name}` must be a mapping such as {{type: float, low: 0.0001, high: 0.1}}. "
                f"Received: {name}={spec!r}"
            )
        unknown = sorted(set(spec) - {"type", "low", "high", "log", "choices"}, key=str)
        if unknown:
            raise SearchSpaceError(
                f"`{name}`: unknown field(s) {unknown}; a dimension has `type` and `low`, "
                f"`high`, `log` (int, float) or `choices` (categorical). Received: {dict(spec)}"
            )
        kind = spec.get("type")
        if kind not in KINDS:
            raise SearchSpaceError(
                f"`{name}`: `type` must be one of {KINDS}. Received: type={kind!r}"
            )
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices or set(spec) - {"type", "choices"}:
                raise SearchSpaceError(
                    f"`{name}`: a categorical dimension has `choices`, a non-empty list, and "
                    f"nothing else. Received: {dict(spec)}"
                )
            return cls(kind, choices=tuple(choices))
        low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
        number = int if kind == "int" else (int, float)
        for field, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
                raise SearchSpaceError(
                    f"`{name}`: `{field}` must be a finite "
                    f"{'integer' if kind == 'int' else 'number'}. Received: {field}={value!r}"
                )
        if "choices" in spec or not isinstance(log, bool):
            raise SearchSpaceError(
                f"`{name}`: an {kind} dimension has `low`, `high` and `log` (true/false), no "
                f"`choices`. Received: {dict(spec)}"
            )
        if low > high:
            raise SearchSpaceError(
                f"`{name}`: `low` must be <= `high`. Received: low={low}, high={high}"
            )
        if log and low <= 0:
            raise SearchSpaceError(
                f"`{name}`: a log-scale range must be positive. Received: low={low}"
            )
        return cls(kind, low=low, high=high, log=log)

    @property
    def values(self) -> tuple[Any, ...]:
        """The extreme values (or every choice): what `SearchSpace.check` validates."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    @property
    def smallest(self) -> Any:
        return min(self.values)

    @property
    def largest(self) -> Any:
        return max(self.values)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


def default_search_space(base: TrainingConfig | None = None) -> dict[str, dict[str, Any]]:
    """The default search space, as the mapping a YAML file would hold.

    For a MoE base config (or none): the number of experts (2-8), `top_k`
    (`num_active_experts`, 1-2 and at most the trial's number of experts), the
    balance weight (log-uniform 1e-4 ... 1e-1), the router z-loss weight
    (log-uniform 1e-5 ... 1e-2), the balance mode, the router's hidden size and
    the learning rate (log-uniform 1e-4 ... 3e-3); plus the experts' level
    (`moe_level`: series or token) when the config schema knows that key. For
    a dense base config: the learning rate only.

    Example:

    >>> sorted(default_search_space())[:3]
    ['learning_rate', 'load_balancing_mode', 'load_balancing_weight']
    """
    learning_rate = {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}
    if base is not None and not base.use_moe:
        return {"learning_rate": learning_rate}
    space: dict[str, dict[str, Any]] = {
        "num_experts": {"type": "int", "low": 2, "high": 8},
        TOP_K: {"type": "int", "low": 1, "high": 2},
        "load_balancing_weight": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "router_z_loss_weight": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "load_balancing_mode": {
            "type": "categorical",
            "choices": ["loss", "bias", "loss_and_bias"],
        },
        "router_hidden_dim": {"type": "categorical", "choices": [32, 64, 128]},
        "learning_rate": learning_rate,
    }
    if "moe_level" in _config_keys():  # token-level experts: sampled once the schema has them
        space["moe_level"] = {"type": "categorical", "choices": ["series", "token"]}
    return space


def _config_keys() -> set[str]:
    return {field.name for field in dataclasses.fields(TrainingConfig)}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The config keys a trial samples, each with its `Dimension`.

    Keys are `TrainingConfig` keys; `num_active_experts` (`top_k`) is drawn
    from its range cut to the trial's `num_experts`, so a trial never asks for
    more active experts than it has. Build one from a mapping
    (`SearchSpace.from_dict`) or a YAML file (`SearchSpace.from_yaml`); errors
    (`SearchSpaceError`, a `ConfigError`) name the key.

    Example:

    >>> space = SearchSpace.from_dict({
    ...     "num_experts": {"type": "int", "low": 2, "high": 4},
    ...     "num_active_experts": {"type": "int", "low": 1, "high": 2},
    ...     "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    >>> list(space.dimensions)
    ['num_experts', 'learning_rate', 'num_active_experts']
    """

    dimensions: dict[str, Dimension]

    @classmethod
    def from_dict(cls, values: Any) -> SearchSpace:
        if not isinstance(values, Mapping) or not values:
            raise SearchSpaceError(
                "A search space is a non-empty mapping of config keys to ranges. "
                f"Received: {values!r}"
            )
        # Not sampled: where the run goes, the backend, the data, and the forecast
        # sampling's `top_k` (a name that would read as the experts' top_k).
        known = _config_keys() - {"output_dir", "backend", "training_data_paths", "top_k"}
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            hints = [
                f"`{close[0]}`"
                for key in unknown
                for close in [difflib.get_close_matches(str(key), sorted(known), n=1)]
                if close
            ]
            extra = " (the experts' top_k is `num_active_experts`)" if "top_k" in unknown else ""
            raise SearchSpaceError(
                f"Unknown search space key(s) {unknown}{extra}. "
                + (f"Did you mean {', '.join(hints)}? " if hints else "")
                + "The keys are training config keys (docs/configuration.md)."
            )
        # num_experts first and top_k last: its upper bound is the trial's num_experts.
        order = sorted(values, key=lambda key: (key != "num_experts", key == TOP_K))
        return cls({key: Dimension.from_dict(key, values[key]) for key in order})

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Reads a search space from a YAML file (a mapping of config keys to ranges)."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except OSError as error:
            raise SearchSpaceError(
                f"Cannot read search space file {str(path)!r}: {error.strerror}"
            ) from error
        except yaml.YAMLError as error:
            raise SearchSpaceError(f"{path} is not valid YAML: {error}") from error
        try:
            return cls.from_dict(values)
        except SearchSpaceError as error:
            raise SearchSpaceError(f"{path}: {error}") from error

    @classmethod
    def default(cls, base: TrainingConfig | None = None) -> SearchSpace:
        """`default_search_space(base)` as a `SearchSpace`."""
        return cls.from_dict(default_search_space(base))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {key: dimension.to_dict() for key, dimension in self.dimensions.items()}

    def check(self, base: TrainingConfig) -> None:
        """Checks that every trial of this space on `base` is a valid config.

        Raises `SearchSpaceError` for MoE keys on a dense base config, a `top_k`
        range that no number of experts allows (`top_k > num_experts`), or a
        range end the config refuses (such as a negative weight).
        """
        moe_keys = [key for key in self.dimensions if key in MOE_KEYS]
        if moe_keys and not base.use_moe:
            raise SearchSpaceError(
                f"The search space samples MoE keys {moe_keys}, but the base config is dense "
                "(`use_moe: false`). Set `use_moe: true` or drop those keys."
            )
        experts = self.dimensions.get("num_experts")
        top_k = self.dimensions.get(TOP_K)
        fewest_experts = experts.smallest if experts else base.num_experts
        fewest_active = top_k.smallest if top_k else base.num_active_experts
        if fewest_active > fewest_experts:
            raise SearchSpaceError(
                "`num_active_experts` (top_k) must be <= `num_experts` in every trial. "
                f"Received: num_active_experts >= {fewest_active}, num_experts >= "
                f"{fewest_experts} (a trial with {fewest_experts} experts has no valid top_k)"
            )
        for key, dimension in self.dimensions.items():
            for value in dimension.values:
                changes = {key: value}
                if key == "num_experts":  # (top_k is cut to the experts of the trial)
                    changes[TOP_K] = min(base.num_active_experts, value)
                if key == TOP_K:
                    changes["num_experts"] = max(value, experts.largest if experts else 0)
                try:
                    base.replace(**changes)
                except ConfigError as error:
                    raise SearchSpaceError(f"search space `{key}`: {error}") from None

    def suggest(self, trial: Any, base: TrainingConfig) -> dict[str, Any]:
        """The config values of one Optuna trial (define-by-run)."""
        values: dict[str, Any] = {}
        for key, dimension in self.dimensions.items():
            if dimension.kind == "categorical":
                values[key] = trial.suggest_categorical(key, list(dimension.choices))
                continue
            low, high = dimension.low, dimension.high
            if key == TOP_K:  # at most the trial's experts
                high = min(high, values.get("num_experts", base.num_experts))
            suggest = trial.suggest_int if dimension.kind == "int" else trial.suggest_float
            values[key] = suggest(key, low, high, log=dimension.log)
        if TOP_K not in values and "num_experts" in values:  # the base top_k, cut to fit
            values[TOP_K] = min(base.num_active_experts, values["num_experts"])
        return values
