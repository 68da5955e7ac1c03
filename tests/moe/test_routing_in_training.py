"""A short real training run keeps every expert in use: the router reads
normalised contexts and is balanced by the windowed loss and the selection bias
(issue 16: the quick demo's router collapsed from step 2 on)."""

import warnings

import numpy as np

from chronos_moe import ChronosPipeline
from chronos_moe.data import generate_sample_series
from chronos_moe.moe.balancing import ExpertCollapseWarning
from chronos_moe.training.run import train
from tests.training.helpers import make_data, make_start_checkpoint, small_config


def test_every_expert_receives_series_and_nothing_collapses(tmp_path):
    start = make_start_checkpoint(tmp_path / "start")
    train_path, _ = make_data(tmp_path, num_series=64, length=80)
    config = small_config(
        start,
        train_path,
        tmp_path / "run",
        use_moe=True,
        num_experts=4,
        num_active_experts=2,
        router_hidden_dim=16,
        per_device_train_batch_size=16,
        max_steps=40,
        save_steps=40,
        log_steps=5,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, verbose=False)
    collapses = [str(w.message) for w in caught if w.category is ExpertCollapseWarning]
    assert collapses == []
    # The balance loss (the windowed shares) stays near 1 (balanced) in every
    # logged window; a full collapse gives N / k = 2.
    assert all(row["lb_loss"] < 1.3 for row in result.log), result.log
    # ... and routes some of the held-out series at inference.
    series = generate_sample_series(64, 80, seed=1)  # the series of make_data
    routes = ChronosPipeline(result.model).route(series)["expert_indices"]
    shares = np.bincount(routes.ravel(), minlength=4) / routes.size
    assert (shares > 0.02).all(), shares  # each expert: a few of the 64 series at least
