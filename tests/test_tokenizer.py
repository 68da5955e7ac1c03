"""MeanScaleUniformBins: exact parity with the reference tokenizer, and input handling.

The reference is `chronos.MeanScaleUniformBins` (torch, CPU). Token ids, masks, scales,
centres and boundaries must be identical, bit for bit.
"""

import doctest
import os
import platform
import subprocess
import sys
import textwrap
from fractions import Fraction

import chronos
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from chronos.utils import left_pad_and_stack_1D

from chronos_moe import tokenizer as tokenizer_module
from chronos_moe.config import ChronosConfig
from chronos_moe.tokenizer import MeanScaleUniformBins, left_pad_and_stack, prepare_context

CONFIG = dict(
    tokenizer_class="MeanScaleUniformBins",
    tokenizer_kwargs={"low_limit": -15.0, "high_limit": 15.0},
    context_length=512,
    prediction_length=64,
    n_tokens=4096,
    n_special_tokens=2,
    pad_token_id=0,
    eos_token_id=1,
    use_eos_token=True,
    model_type="seq2seq",
    num_samples=20,
    temperature=1.0,
    top_k=50,
    top_p=1.0,
)


def make_tokenizers(**overrides):
    """Our tokenizer and the reference one, built from the same fields."""
    fields = {**CONFIG, **overrides}
    ours = MeanScaleUniformBins.from_config(ChronosConfig(**fields))
    reference = chronos.ChronosConfig(**fields).create_tokenizer()
    return ours, reference


def assert_identical(ours, reference):
    """Same dtype, shape and bits (NaN where the reference has NaN)."""
    reference = reference.numpy() if isinstance(reference, torch.Tensor) else reference
    assert ours.dtype == reference.dtype
    assert ours.shape == reference.shape
    if ours.dtype == np.float32:
        nan = np.isnan(reference)
        np.testing.assert_array_equal(np.isnan(ours), nan)
        np.testing.assert_array_equal(ours[~nan].view(np.uint32), reference[~nan].view(np.uint32))
    else:
        np.testing.assert_array_equal(ours, reference)


def assert_context_parity(ours, reference, context):
    """Both tokenizers give identical ids, masks and scales for `context`."""
    ids, mask, scale = ours.context_input_transform(context)
    ref_ids, ref_mask, ref_scale = reference.context_input_transform(torch.tensor(context))
    assert_identical(ids, ref_ids)
    assert_identical(mask, ref_mask)
    assert_identical(scale, ref_scale)
    return ids, mask, scale


def random_series(rng, shape, nan_fraction=0.1):
    """Series with random level, spread and sign, and missing values."""
    magnitude = 10.0 ** rng.uniform(-3, 3, size=shape[:-1] + (1,))
    offset = rng.uniform(-3, 3, size=shape[:-1] + (1,)) * magnitude
    values = (rng.standard_normal(shape) * magnitude + offset).astype(np.float32)
    values[rng.random(shape) < nan_fraction] = np.nan
    return values


# --- bins --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, n_tokens",
    [
        (-15.0, 15.0, 4096),
        (-15.0, 15.0, 4097),
        (-15.0, 15.0, 8192),
        (-10.0, 12.5, 1024),
        (-1.0, 1.0, 13),
        (0.1, 7.3, 515),
        (-3.3, 1e-3, 5),
        (-15.0, 15.0, 4),  # a single centre
    ],
)
def test_centers_and_boundaries_are_bit_identical(low, high, n_tokens):
    ours, reference = make_tokenizers(
        tokenizer_kwargs={"low_limit": low, "high_limit": high}, n_tokens=n_tokens
    )
    assert_identical(ours.centers, reference.centers)
    assert_identical(ours.boundaries, reference.boundaries)
    assert ours.centers.shape == (n_tokens - 3,)
    assert ours.boundaries.shape == (n_tokens - 2,)


def test_linspace_matches_torch_on_random_limits(rng):
    for _ in range(200):
        low, high = float(rng.uniform(-100, 0)), float(rng.uniform(1e-3, 100))
        steps = int(rng.integers(1, 10_000))
        ours = tokenizer_module._torch_linspace_float32(low, high, steps)
        assert_identical(ours, torch.linspace(low, high, steps))


def test_two_roundings_do_not_reproduce_torch_linspace():
    # Why `_torch_linspace_float32` fuses: plain float32 arithmetic differs from torch.
    if not tokenizer_module._FUSED:
        pytest.skip("torch's linspace kernel is not fused on this CPU")
    unfused = tokenizer_module._torch_linspace_float32(-15.0, 15.0, 4093, fused=False)
    assert (unfused != torch.linspace(-15.0, 15.0, 4093).numpy()).any()


def round_to_float32(value: Fraction) -> np.float32:
    """Correct rounding of an exact rational to float32 (ties to even)."""
    guess = np.float32(float(value))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess]
    candidates.append(np.nextafter(guess, np.float32(np.inf)))
    errors = [abs(Fraction(float(c)) - value) for c in candidates]
    best = min(errors)
    ties = [c for c, e in zip(candidates, errors, strict=True) if e == best]
    return min(ties, key=lambda c: int(np.array(c).view(np.uint32)) & 1)


def test_fma_rounds_once_where_float64_would_round_twice(rng):
    # 8392705 * 16769026 = 2**47 + 2, so a * b + c = 1 - 2**-25 - 2**-71: float64 rounds it
    # onto the float32 midpoint 1 - 2**-25, from where ties-to-even would give 1.0.
    a = np.array([-8392705 * 2.0**-24], dtype=np.float32)
    b = np.array([16769026 * 2.0**-48], dtype=np.float32)
    c = np.array([1.0], dtype=np.float32)
    exact = Fraction(float(a[0])) * Fraction(float(b[0])) + 1
    assert np.float32(float(exact)) == np.float32(1.0)  # the naive double rounding
    assert tokenizer_module._fma_float32(a, b, c)[0] == round_to_float32(exact)
    assert tokenizer_module._fma_float32(a, b, c)[0] == np.nextafter(np.float32(1), np.float32(0))
    a, b, c = (rng.standard_normal(300).astype(np.float32) for _ in range(3))
    fused = tokenizer_module._fma_float32(a, b, c)
    for i in range(300):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert fused[i] == round_to_float32(exact)


def test_cpu_traits_match_torch():
    capability = torch.backends.cpu.get_cpu_capability()
    arm = platform.machine().lower() in ("aarch64", "arm64")
    expected = {
        "DEFAULT": (4 if arm else 8, arm),
        "AVX2": (8, True),
        "AVX512": (8, True),  # torch's sum kernels are not registered for AVX512
        "SVE256": (8, True),
    }
    if capability not in expected:
        pytest.skip(f"no expectation recorded for CPU capability {capability}")
    assert tokenizer_module._torch_cpu_traits() == expected[capability]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_numpy_cpu_features_private_api():
    """numpy's private `__cpu_features__` (read by one wrapper) still maps
    feature names to booleans, AVX2 and FMA3 among them, and agrees with the
    capability torch dispatches to."""
    features = tokenizer_module._numpy_cpu_features()
    assert isinstance(features, dict) and {"AVX2", "FMA3"} <= set(features)
    assert all(isinstance(value, bool) for value in features.values())
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert features["AVX2"] and features["FMA3"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_parity_under_the_default_cpu_capability():
    # ATEN_CPU_CAPABILITY=default runs torch's unfused kernels; the tokenizer must follow.
    script = textwrap.dedent(
        """
        import numpy as np, torch, chronos_moe.tokenizer as t
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        assert not t._FUSED
        centres = t._torch_linspace_float32(-15, 15, 4093)
        assert (centres == torch.linspace(-15, 15, 4093).numpy()).all()
        x = np.abs(np.random.default_rng(0).standard_normal((4, 600))).astype(np.float32)
        assert (t._torch_nansum_float32(x) == torch.nansum(torch.tensor(x), -1).numpy()).all()
        """
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


# --- context_input_transform -------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch, length, context_length",
    [
        (1, 1, 512),
        (3, 5, 512),  # shorter than one vector: torch's scalar sum
        (2, 8, 512),
        (4, 15, 512),
        (1, 64, 512),
        (5, 300, 512),
        (1, 512, 512),
        (2, 513, 512),
        (3, 700, 512),  # truncated to the last 512 values
        (2, 5000, 5000),  # several chunk levels of torch's cascade sum
        (2, 140_000, 140_000),  # all four chunk levels
    ],
)
def test_context_parity_on_random_series(batch, length, context_length):
    rng = np.random.default_rng(batch * 100_003 + length)
    ours, reference = make_tokenizers(context_length=context_length)
    for nan_fraction in (0.0, 0.2):
        context = random_series(rng, (batch, length), nan_fraction)
        ids, mask, scale = assert_context_parity(ours, reference, context)
        assert ids.shape == (batch, min(length, context_length) + 1)
        assert (ids[:, -1] == 1).all() and mask[:, -1].all()


def test_context_parity_with_left_padding(rng):
    ours, reference = make_tokenizers(context_length=100)
    for _ in range(20):
        lengths = rng.integers(1, 150, size=int(rng.integers(1, 6)))
        series = [random_series(rng, (int(n),), nan_fraction=0.1) for n in lengths]
        context = left_pad_and_stack(series)
        reference_context = left_pad_and_stack_1D([torch.tensor(s) for s in series])
        assert_identical(context, reference_context)
        ids, mask, scale = ours.context_input_transform(series)
        ref_ids, ref_mask, ref_scale = reference.context_input_transform(reference_context)
        assert_identical(ids, ref_ids)
        assert_identical(mask, ref_mask)
        assert_identical(scale, ref_scale)


def test_context_parity_on_special_series():
    tiny = np.float32(1e-45)  # the smallest subnormal
    rows = {
        "zeros": np.zeros(16),
        "nan": np.full(16, np.nan),
        "one observation": np.r_[np.full(15, np.nan), 3.5],
        "constant": np.full(16, 2.5),
        "zeros and nan": np.r_[np.zeros(8), np.full(8, np.nan)],
        "huge": np.linspace(-1e30, 1e30, 16),
        "overflowing sum": np.full(16, 3e38),
        "tiny": np.linspace(-1e-30, 1e-30, 16),
        "subnormal": np.r_[np.zeros(15), tiny],
        "inf": np.r_[np.arange(15.0), np.inf],
        "-inf": np.r_[np.arange(15.0), -np.inf],
        "outlier": np.r_[np.ones(15), 1e6],
        "mixed signs": np.tile([-1.0, 1.0], 8),
    }
    context = np.stack(list(rows.values())).astype(np.float32)
    for overrides in ({}, {"context_length": 10}):
        ours, reference = make_tokenizers(**overrides)
        assert_context_parity(ours, reference, context)
        for row in context:  # and one series at a time (other kernel shapes in torch)
            assert_context_parity(ours, reference, row[None])


def test_all_nan_series_keeps_the_reference_behaviour():
    tokenizer, _ = make_tokenizers()
    ids, mask, scale = tokenizer.context_input_transform(np.full((1, 6), np.nan))
    assert scale.tolist() == [1.0]
    assert ids.tolist() == [[0, 0, 0, 0, 0, 0, 1]]
    assert mask.tolist() == [[False] * 6 + [True]]


def test_context_parity_for_float64_integer_and_tensor_inputs(rng):
    ours, reference = make_tokenizers(context_length=64)
    float64 = random_series(rng, (3, 80)).astype(np.float64) * 1.000001
    integers = rng.integers(-1000, 1000, size=(3, 80))
    for context in (float64, integers):
        ids, mask, scale = ours.context_input_transform(context)
        ref_ids, ref_mask, ref_scale = reference.context_input_transform(torch.tensor(context))
        assert_identical(ids, ref_ids)
        assert_identical(mask, ref_mask)
        assert_identical(scale, ref_scale)
        for converted in (torch.tensor(context), jnp.asarray(context)):
            np.testing.assert_array_equal(ours.context_input_transform(converted)[0], ids)


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_eos_token": False},
        {"n_special_tokens": 3, "pad_token_id": 2, "eos_token_id": 0, "n_tokens": 1000},
        {"tokenizer_kwargs": {"low_limit": -5.0, "high_limit": 9.0}, "n_tokens": 333},
    ],
)
def test_parity_with_other_configs(overrides, rng):
    ours, reference = make_tokenizers(context_length=50, prediction_length=7, **overrides)
    context = random_series(rng, (4, 60))
    ids, mask, scale = assert_context_parity(ours, reference, context)
    label = random_series(rng, (4, 7)) * 3
    for ours_out, ref_out in zip(
        ours.label_input_transform(label, scale),
        reference.label_input_transform(torch.tensor(label), torch.tensor(scale)),
        strict=True,
    ):
        assert_identical(ours_out, ref_out)
    expected_length = 50 + (1 if ours.config.use_eos_token else 0)
    assert ids.shape == mask.shape == (4, expected_length)


# --- label_input_transform ---------------------------------------------------------------------


def test_label_parity_on_random_series(rng):
    ours, reference = make_tokenizers()
    for _ in range(10):
        context = random_series(rng, (4, 512))
        label = random_series(rng, (4, 64), nan_fraction=0.1) * 2
        _, _, scale = ours.context_input_transform(context)
        ids, mask = ours.label_input_transform(label, scale)
        ref_ids, ref_mask = reference.label_input_transform(
            torch.tensor(label), torch.tensor(scale)
        )
        assert_identical(ids, ref_ids)
        assert_identical(mask, ref_mask)
        assert ids.shape == (4, 65) and (ids[:, -1] == 1).all()


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.25])
def test_values_exactly_on_boundaries_and_centres(scale):
    # With a power-of-two scale, value / scale lands exactly on the boundary or centre.
    ours, reference = make_tokenizers(prediction_length=8)
    values = {
        "boundaries": ours.boundaries[1:-1],  # boundary i belongs to the bin above it
        "centres": ours.centers,
    }
    for name, targets in values.items():
        n = len(targets) // 8 * 8
        label = (targets[:n] * np.float32(scale)).reshape(-1, 8)
        scales = np.full(label.shape[0], scale, dtype=np.float32)
        ids, mask = ours.label_input_transform(label, scales)
        ref_ids, ref_mask = reference.label_input_transform(
            torch.tensor(label), torch.tensor(scales)
        )
        assert_identical(ids, ref_ids)
        assert_identical(mask, ref_mask)
        # Centre k is in bin k + 1 (bin 0 lies below the first midpoint); a boundary
        # value opens the bin above it; ids add n_special_tokens = 2.
        first_id = {"centres": 3, "boundaries": 4}[name]
        np.testing.assert_array_equal(ids[:, :-1].reshape(-1), np.arange(n) + first_id)


def test_label_of_wrong_length_raises():
    tokenizer, _ = make_tokenizers(prediction_length=8)
    with pytest.raises(ValueError, match=r"prediction_length.*Received: label.shape=\(2, 7\)"):
        tokenizer.label_input_transform(np.zeros((2, 7)), np.ones(2))
    with pytest.raises(ValueError, match=r"scale.*Received: scale.shape=\(3,\)"):
        tokenizer.label_input_transform(np.zeros((2, 8)), np.ones(3))


# --- output_transform --------------------------------------------------------------------------


def test_output_transform_parity(rng):
    ours, reference = make_tokenizers()
    samples = rng.integers(-3, 4100, size=(5, 20, 64))
    samples[0, 0, :6] = [0, 1, 2, 3, 4095, 4094]  # special tokens and both ends
    scale = np.array([1.0, 2.5, 1e-6, 3e5, 17.3], dtype=np.float32)
    values = ours.output_transform(samples, scale)
    assert_identical(values, reference.output_transform(torch.tensor(samples), torch.tensor(scale)))
    for converted in (torch.tensor(samples, dtype=torch.int32), jnp.asarray(samples)):
        assert_identical(ours.output_transform(converted, scale), values)


def test_round_trip_centres_to_ids_to_centres():
    for overrides in (
        {},
        {"n_tokens": 1000, "tokenizer_kwargs": {"low_limit": -3.0, "high_limit": 4.0}},
    ):
        tokenizer, _ = make_tokenizers(prediction_length=1, **overrides)
        centres = tokenizer.centers[:, None]  # one series per centre
        ids, _ = tokenizer.label_input_transform(centres, np.ones(len(centres)))
        back = tokenizer.output_transform(ids[:, None, :1], np.ones(len(centres)))
        assert_identical(back[:, 0, 0], tokenizer.centers)


def test_output_transform_rejects_bad_samples():
    tokenizer, _ = make_tokenizers()
    with pytest.raises(ValueError, match=r"integer array.*Received: samples.shape=\(2, 3\)"):
        tokenizer.output_transform(np.zeros((2, 3), dtype=np.int64), np.ones(2))
    with pytest.raises(ValueError, match=r"Received: .*samples.dtype=float64"):
        tokenizer.output_transform(np.zeros((2, 1, 3)), np.ones(2))


# --- construction ------------------------------------------------------------------------------


def test_from_config_reads_tokenizer_kwargs():
    config = ChronosConfig(tokenizer_kwargs={"low_limit": -2.0, "high_limit": 3.0}, n_tokens=10)
    tokenizer = MeanScaleUniformBins.from_config(config)
    assert tokenizer.config is config
    assert (tokenizer.low_limit, tokenizer.high_limit) == (-2.0, 3.0)
    assert_identical(tokenizer.centers, torch.linspace(-2.0, 3.0, 7))
    assert tokenizer.centers.dtype == tokenizer.boundaries.dtype == np.float32


def test_limits_must_be_ordered():
    with pytest.raises(ValueError, match="Received: low_limit=1.0, high_limit=1.0"):
        MeanScaleUniformBins(1.0, 1.0, ChronosConfig())


# --- prepare_context / left_pad_and_stack ------------------------------------------------------


def test_prepare_context_accepted_forms():
    expected = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, 4.0]], dtype=np.float32)
    forms = [
        [np.array([1.0, 2.0, 3.0]), np.array([4.0])],
        [[1, 2, 3], [4]],
        ([1.0, 2.0, 3.0], np.array([4.0], dtype=np.float16)),
        [torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([4.0])],
        [torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), torch.tensor([4])],
        [jnp.array([1.0, 2.0, 3.0]), jnp.array([4.0], dtype=jnp.bfloat16)],
        expected.astype(np.float64),
        torch.tensor(expected),
        jnp.asarray(expected),
    ]
    for form in forms:
        context = prepare_context(form)
        assert context.dtype == np.float32
        np.testing.assert_array_equal(context, expected)
    for one_series in (np.array([1.0, 2.0]), [1.0, 2.0], torch.tensor([1, 2]), jnp.array([1, 2])):
        np.testing.assert_array_equal(prepare_context(one_series), [[1.0, 2.0]])
    np.testing.assert_array_equal(prepare_context(np.full(3, np.nan)), np.full((1, 3), np.nan))


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        ([], ValueError, r"at least one series. Received: context=\[\]"),
        (np.array([]), ValueError, r"at least one value. Received: context with shape \(0,\)"),
        (np.zeros((0, 5)), ValueError, r"Received: context with shape \(0, 5\)"),
        ([np.ones(3), np.array([])], ValueError, r"Received: series\[1\] of length 0"),
        (np.zeros((2, 3, 4)), ValueError, r"Received: context with shape \(2, 3, 4\)"),
        ([np.ones(3), np.ones((2, 2))], ValueError, r"1-D. Received: series\[1\] with shape"),
        ([[[1.0, 2.0]]], ValueError, r"1-D. Received: series\[0\] with shape \(1, 2\)"),
        ("abc", TypeError, r"numeric.*Received: context with dtype <U3"),
        (["a", "b"], TypeError, r"numeric.*Received: series\[0\] with dtype <U1"),
        ([np.ones(3), "abc"], TypeError, r"numeric.*Received: series\[1\]"),
        (np.array([object(), 1.0]), TypeError, r"numeric.*Received: context with dtype object"),
        (np.ones(3) * 1j, TypeError, r"numeric.*Received: context with dtype complex128"),
        (None, TypeError, r"numeric.*Received: context with dtype object"),
    ],
)
def test_prepare_context_errors(inputs, error, message):
    with pytest.raises(error, match=message):
        prepare_context(inputs)


def test_left_pad_and_stack_errors():
    with pytest.raises(TypeError, match="list of 1-D series. Received: series of type ndarray"):
        left_pad_and_stack(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Received: series=\[\]"):
        left_pad_and_stack([])


def test_docstring_examples_run():
    result = doctest.testmod(tokenizer_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
