"""The objective: a trial trains the base config with its values and seed in its
own directory, is scored by WQL, reports CE to the pruner, and does not leak
into the next trial."""

import optuna
import pytest
import yaml

from chronos_moe.tuning.objective import PruningCallback, make_objective
from chronos_moe.tuning.search_space import SearchSpace
from tests.tuning.helpers import SMALL_SPACE, make_base


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_pruning_callback_reports_window_means():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    callback = PruningCallback(study.ask(), every=2)
    for step, ce in enumerate([1.0, 3.0, float("nan"), 5.0]):
        callback.on_train_batch_end(step, {"ce_loss": ce})
    assert callback.reported == [(2, 2.0), (4, 5.0)]  # a non-finite CE is left out


def test_trials_do_not_leak_and_prune(tmp_path):
    base = make_base(tmp_path)
    space = SearchSpace.from_dict(SMALL_SPACE)
    objective = make_objective(base, tmp_path / "study", space)
    params = {"num_experts": 2, "num_active_experts": 1, "load_balancing_weight": 0.01}
    first = optuna.trial.FixedTrial(params, number=0)
    score = objective(first)
    assert score > 0
    assert first.user_attrs["seed"] == base.seed
    trial_dir = tmp_path / "study" / "trials" / "trial-0000"
    written = yaml.safe_load((trial_dir / "config.yaml").read_text())
    assert written["seed"] == base.seed and written["num_experts"] == 2
    assert written["load_balancing_weight"] == 0.01
    # A pruner that always prunes stops a trial at its first report ...
    study = optuna.create_study(pruner=AlwaysPrune())
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    assert not (trial_dir / "final").is_dir()  # (the pruned run replaced the trial-0 run)
    assert len((trial_dir / "steps.jsonl").read_text().splitlines()) == 1
    # ... and the trial that ran between two runs of the same one changes nothing.
    assert objective(optuna.trial.FixedTrial(params, number=0)) == score


def test_the_base_needs_a_validation_split(tmp_path):
    from chronos_moe.training.config import ConfigError

    base = make_base(tmp_path).replace(validation_data_paths=None)
    with pytest.raises(ConfigError, match="set `validation_data_paths`"):
        make_objective(base, tmp_path / "study", SearchSpace.from_dict(SMALL_SPACE))
