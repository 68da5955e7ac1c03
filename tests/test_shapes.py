"""`chronos_moe.shapes`: the padded lengths and batch chunks of the pipelines,
and that forecasts do not depend on them (greedy T5 and Bolt forecasts of
series alone against the same series padded and chunked in one batch)."""

import keras
import numpy as np
import pytest

from chronos_moe import shapes
from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
from tests.layers.helpers import small_model
from tests.test_chronos_bolt import small_bolt

STATIC = keras.config.backend() == "jax"


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setattr(shapes, "static_shapes", lambda: True)


@pytest.fixture
def dynamic(monkeypatch):
    monkeypatch.setattr(shapes, "static_shapes", lambda: False)


def test_only_jax_compiles_per_shape():
    assert shapes.static_shapes() == STATIC


def test_lengths_follow_the_ladder_up_to_the_cap(static):
    lengths = [shapes.padded_length(n, cap=512, smallest=16) for n in range(1, 513)]
    assert sorted(set(lengths)) == [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    for n, padded in enumerate(lengths, start=1):
        assert padded >= n
        assert n <= 16 or padded <= 1.5 * n  # at most a third of a padded length is padding
    assert shapes.padded_length(600, cap=512, smallest=16) == 600  # beyond the cap: as it is
    patches = {shapes.padded_length(n, cap=16) for n in range(1, 17)}
    assert patches == {1, 2, 3, 4, 6, 8, 12, 16}


def test_batches_split_into_full_chunks_and_at_most_two_ladder_chunks(static):
    ladder = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}
    sizes = set()
    for rows in range(1, 200):
        chunks = shapes.batch_chunks(rows, 64)
        assert chunks[0][0] == 0 and chunks[-1][1] == rows
        assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
        full, remainder = chunks[: rows // 64], chunks[rows // 64 :]
        assert all(stop - start == padded == 64 for start, stop, padded in full)
        assert (not remainder) == (rows % 64 == 0) and len(remainder) <= 2
        for start, stop, padded in chunks:
            assert stop - start <= padded <= max(stop - start, 3 * (stop - start) / 2)
            sizes.add(padded)
        # the split is taken only when it pads fewer rows than one chunk would
        if len(remainder) == 2:
            one = shapes.padded_length(rows % 64, cap=64)
            assert sum(padded for *_, padded in remainder) < one
    assert sizes == ladder
    assert shapes.batch_chunks(37, 64) == [(0, 32, 32), (32, 37, 6)]
    assert shapes.batch_chunks(47, 64) == [(0, 47, 48)]
    assert shapes.batch_chunks(70, 30) == [(0, 30, 30), (30, 60, 30), (60, 68, 8), (68, 70, 2)]


def test_padded_rows_repeat_the_last_series():
    array = np.arange(6.0).reshape(3, 2)
    padded = shapes.padded_rows(array, 5)
    np.testing.assert_array_equal(padded[:3], array)
    np.testing.assert_array_equal(padded[3:], [[4.0, 5.0], [4.0, 5.0]])
    assert shapes.padded_rows(array, 3) is array


def test_torch_takes_every_shape_as_it_is(dynamic):
    assert [shapes.padded_length(n, cap=512, smallest=16) for n in (1, 17, 100, 600)] == [
        1,
        17,
        100,
        600,
    ]
    assert shapes.batch_chunks(37, 16) == [(0, 16, 16), (16, 32, 16), (32, 37, 5)]
    assert shapes.batch_chunks(0, 16) == []


def test_bolt_forecasts_do_not_depend_on_chunks_or_padding():
    model = small_bolt(context_length=128)
    pipeline = ChronosBoltPipeline(model)
    rng = np.random.default_rng(1)
    series = [rng.normal(5.0, 2.0, length).astype("float32") for length in (9, 30, 57, 77, 100)]
    together = pipeline.predict(series + series[:2], batch_size=4)  # 4 rows, 3 padded to 4 on JAX
    alone = np.concatenate([pipeline.predict(s) for s in series + series[:2]])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_t5_forecasts_do_not_depend_on_chunks_or_padding():
    pipeline = ChronosPipeline(small_model())
    rng = np.random.default_rng(2)
    series = [rng.normal(5.0, 2.0, int(n)).astype("float32") for n in rng.integers(3, 16, 13)]
    # 13 series in one batch of 16: on JAX 8 rows, then 5 padded to 6
    together = pipeline.predict(series, num_samples=1, top_k=1, batch_size=16)
    alone = np.concatenate([pipeline.predict(s, num_samples=1, top_k=1) for s in series])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
