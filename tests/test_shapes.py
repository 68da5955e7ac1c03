"""`chronos_moe.shapes`: the padded lengths and batch chunks of the pipelines,
and that forecasts do not depend on them (greedy T5 chunks against the
reference: tests/test_pipeline.py)."""

import keras
import numpy as np
import pytest

from chronos_moe import shapes
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
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


def test_batches_split_into_full_chunks_and_powers_of_two(static):
    sizes = set()
    for rows in range(1, 130):
        chunks = shapes.batch_chunks(rows, 64)
        assert chunks[0][0] == 0 and chunks[-1][1] == rows
        assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
        sizes |= {stop - start for start, stop in chunks}
    assert sizes == {1, 2, 4, 8, 16, 32, 64}
    assert shapes.batch_chunks(37, 64) == [(0, 32), (32, 36), (36, 37)]
    assert shapes.batch_chunks(70, 30) == [(0, 30), (30, 60), (60, 68), (68, 70)]


def test_torch_takes_every_shape_as_it_is(dynamic):
    assert [shapes.padded_length(n, cap=512, smallest=16) for n in (1, 17, 100, 600)] == [
        1,
        17,
        100,
        600,
    ]
    assert shapes.batch_chunks(37, 16) == [(0, 16), (16, 32), (32, 37)]
    assert shapes.batch_chunks(0, 16) == []


def test_bolt_forecasts_do_not_depend_on_chunks_or_padding():
    model = small_bolt(context_length=128)
    pipeline = ChronosBoltPipeline(model)
    rng = np.random.default_rng(1)
    series = [rng.normal(5.0, 2.0, length).astype("float32") for length in (9, 30, 57, 77, 100)]
    together = pipeline.predict(series + series[:2], batch_size=4)  # chunks 4, 2, 1 on JAX
    alone = np.concatenate([pipeline.predict(s) for s in series + series[:2]])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
