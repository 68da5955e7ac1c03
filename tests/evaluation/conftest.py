"""Fixtures of the evaluation tests: tiny untrained dense and MoE pipelines, one
per test session, so that JAX compiles each forecasting function once."""

import keras
import pytest

from chronos_moe import ChronosPipeline, ChronosT5, build_moe_chronos
from tests.evaluation.helpers import TINY_CHRONOS


@pytest.fixture(scope="session")
def dense_pipeline() -> ChronosPipeline:
    keras.utils.set_random_seed(0)
    base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1, chronos_config=TINY_CHRONOS)
    return ChronosPipeline(base)


@pytest.fixture(scope="session")
def moe_pipeline(dense_pipeline) -> ChronosPipeline:
    # Noisy expert heads, so that experts differ and routes are not all alike.
    moe = build_moe_chronos(
        dense_pipeline.model, num_experts=4, top_k=2, expert_init_noise=0.5, seed=0
    )
    return ChronosPipeline(moe)
