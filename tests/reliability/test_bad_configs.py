"""Bad configs end at once (issue 9, item 8).

Property-based mutations of the shipped sample config
(`chronos_moe/configs/chronos-t5-tiny-moe-sample.yaml`): unknown keys, a
missing required key, values of the wrong type, negative or non-finite
numbers, out-of-range values, probabilities that do not match the data paths
or do not sum to 1, `num_active_experts` (top-k) above `num_experts`, bad
tokenizer settings. Each one makes `chronos-moe train --config` exit with
status 2 and a one-line error naming the key and the value, no traceback, no
output directory or lock created, and neither data nor model touched.

The property runs in-process through `chronos_moe.cli.main`; two cases run the
real command in a subprocess. (Their wall time, under 5 s, is measured by
`benchmarks/reliability_timings.py`, not asserted here.)
"""

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chronos_moe.configs
from chronos_moe.cli import main
from chronos_moe.training import config as config_module
from chronos_moe.training import run
from chronos_moe.training.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(chronos_moe.configs.__file__).parent / "chronos-t5-tiny-moe-sample.yaml"
FIELDS = {field.name: field for field in dataclasses.fields(TrainingConfig)}
HINTS = __import__("typing").get_type_hints(TrainingConfig)

POSITIVE = (
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
)
POSITIVE_FLOAT = ("learning_rate", "temperature", "initializer_factor", "bias_update_rate")
NON_NEGATIVE_FLOAT = ("weight_decay", "load_balancing_weight", "router_z_loss_weight")
UNIT_INTERVAL = ("warmup_ratio", "max_missing_prop", "router_jitter_noise")
WRONG_TYPES = ["ten", 2.5, True, None, [1, 2], {"a": 1}, -3, "", [], {}]


def sample() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


def shown(value) -> str:
    """How the error message shows `value`: its repr, after a YAML round trip (which
    sorts mapping keys)."""
    if isinstance(value, dict):
        value = dict(sorted(value.items()))
    return repr(value)


# ---- mutations: (values, key the error must name, text of the value it must show) ----------


def unknown_key():
    names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
        lambda name: name not in FIELDS
    )
    return st.builds(lambda name: ({**sample(), name: 1}, name, name), names)


def missing_data_paths():
    values = sample()
    del values["training_data_paths"]
    del values["probability"]
    return st.just((values, "training_data_paths", "[]"))


def wrong_type():
    def make(key, value):
        return {**sample(), key: value}, key, f"{key}={shown(value)}"

    return (
        st.tuples(st.sampled_from(sorted(FIELDS)), st.sampled_from(WRONG_TYPES))
        .filter(
            lambda pair: (
                not config_module._matches(pair[1], HINTS[pair[0]])
                and not (pair[0] == "training_data_paths" and pair[1] == [])
            )
        )
        .map(lambda pair: make(*pair))
    )


def out_of_range():
    def make(key, value):
        return {**sample(), key: value}, key, f"{key}={shown(value)}"

    nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
    return st.one_of(
        st.tuples(st.sampled_from(POSITIVE), st.integers(-(2**40), 0)),
        st.tuples(
            st.sampled_from(POSITIVE_FLOAT),
            nonfinite | st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
        ),
        st.tuples(
            st.sampled_from(NON_NEGATIVE_FLOAT),
            nonfinite | st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
        ),
        st.tuples(
            st.sampled_from(UNIT_INTERVAL),
            st.just(math.nan) | st.floats(min_value=1.0001) | st.floats(max_value=-1e-9),
        ),
        st.tuples(st.just("min_past"), st.integers(-100, 0)),
        st.tuples(st.just("top_p"), st.floats(max_value=0.0) | st.floats(min_value=1.0001)),
        st.tuples(st.just("save_total_limit"), st.integers(-5, 0)),
        st.tuples(st.just("n_tokens"), st.integers(1, 3)),
    ).map(lambda pair: make(*pair))


def bad_probability():
    def make(probability, paths):
        values = {**sample(), "probability": probability, "training_data_paths": paths}
        return values, "probability", shown(probability)

    one_path = ["a.arrow"]
    bad_number = st.sampled_from([math.nan, math.inf, -math.inf]) | st.floats(
        max_value=-1e-6, allow_nan=False
    )
    return st.one_of(
        st.builds(lambda p: make([p], one_path), bad_number),  # negative or not finite
        st.builds(lambda p: make([p, 1.0 - p], ["a.arrow", "b.arrow"]), bad_number),
        st.builds(  # lengths that do not match
            lambda n, k: make([1.0 / n] * n, [f"{i}.arrow" for i in range(k)]),
            st.integers(1, 5),
            st.integers(1, 5),
        ).filter(lambda case: len(case[0]["probability"]) != len(case[0]["training_data_paths"])),
        st.builds(  # that do not sum to 1
            lambda p: make([p, p], ["a.arrow", "b.arrow"]),
            st.floats(0.0, 1.0).filter(lambda p: abs(2 * p - 1) > 1e-3),
        ),
    )


def too_many_active_experts():
    def make(num_experts, extra):
        values = {**sample(), "num_experts": num_experts, "num_active_experts": num_experts + extra}
        return values, "num_active_experts", f"num_active_experts={num_experts + extra}"

    return st.builds(make, st.integers(1, 64), st.integers(1, 64))


def bad_tokenizer():
    def make(kwargs):
        return {**sample(), "tokenizer_kwargs": kwargs}, "tokenizer_kwargs", shown(kwargs)

    limits = st.floats(-100, 100)
    return st.one_of(
        st.builds(
            lambda a, b: make({"low_limit": max(a, b), "high_limit": min(a, b)}), limits, limits
        ),
        st.builds(lambda a: make({"low_limit": a}), limits),
        st.builds(lambda a: make({"low_limit": -a, "high_limit": a, "scale": 1.0}), limits),
    )


MUTATIONS = st.one_of(
    unknown_key(),
    missing_data_paths(),
    wrong_type(),
    out_of_range(),
    bad_probability(),
    too_many_active_experts(),
    bad_tokenizer(),
)


# ---- the property ----------------------------------------------------------------------------


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Fails the test if any data or model is loaded, or training starts."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a bad config reached data, model or training")

    for name in ("train", "build_dataset", "build_model", "_run"):
        monkeypatch.setattr(run, name, forbidden)


def run_main(capsys, config_file) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["train", "--config", str(config_file)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@settings(
    max_examples=int(os.environ.get("CHRONOS_CONFIG_EXAMPLES", 150)),
    deadline=None,
    derandomize="CHRONOS_CONFIG_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=MUTATIONS)
def test_a_mutated_sample_config_exits_2_naming_key_and_value(nothing_loaded, capsys, mutation):
    values, key, value_text = mutation
    if key != "output_dir":
        values = {**values, "output_dir": "output"}
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # relative paths (the sample's output_dir) land here
        try:
            Path("config.yaml").write_text(yaml.safe_dump(values))
            status, output = run_main(capsys, "config.yaml")
            created = sorted(p.name for p in Path(folder).iterdir())
        finally:
            os.chdir(home)
    assert status == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chronos-moe train: error: "), output
    assert "Traceback" not in output
    assert key in output and value_text in output, (key, value_text, output)
    assert created == ["config.yaml"]  # no output directory, no lock


def test_the_sample_itself_is_valid(nothing_loaded):
    TrainingConfig.from_dict(sample())


@pytest.mark.parametrize(
    "text, named",
    [
        ("training_data_paths: [a.arrow\nprobability: [1.0]\n", "is not valid YAML"),
        ("- training_data_paths\n- probability\n", "mapping of keys to values"),
        ("1: 2\ntraining_data_paths: [a.arrow]\n", "Unknown config key(s) [1]"),
    ],
)
def test_text_that_is_no_config_exits_2(nothing_loaded, capsys, tmp_path, text, named):
    (tmp_path / "config.yaml").write_text(text)
    status, output = run_main(capsys, tmp_path / "config.yaml")
    assert status == 2 and named in output and "Traceback" not in output
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize(
    "change, named",
    [
        ({"num_active_experts": 5}, "num_active_experts=5, num_experts=4"),
        ({"probability": [-0.5]}, "probability=[-0.5]"),
    ],
)
def test_the_real_command_exits_2_without_a_traceback(tmp_path, change, named):
    values = {**sample(), **change, "output_dir": str(tmp_path / "output")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "chronos_moe.cli"]
        + ["train", "--config", "config.yaml"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    ]
    errors = [line for line in completed.stderr.splitlines() if not line.startswith("import time:")]
    assert completed.returncode == 2, completed.stderr
    assert len(errors) == 1 and errors[0].startswith("chronos-moe train: error: ")
    assert named in errors[0] and "Traceback" not in completed.stderr
    assert completed.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    # Refused before Keras or a backend was even imported.
    assert "yaml" in imported
    assert not {"keras", "torch", "jax"} & {name.split(".")[0] for name in imported}
