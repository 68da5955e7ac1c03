"""A study in one directory: the SQLite study, the best config (which trains),
the plots, resuming, and the directories it refuses."""

import optuna
import pytest

from chronos_moe.training.config import TrainingConfig
from chronos_moe.training.errors import RunError
from chronos_moe.tuning.search_space import SearchSpace, SearchSpaceError
from chronos_moe.tuning.study import tune, write_results
from tests.tuning.helpers import SMALL_SPACE, make_base


def test_a_study_writes_its_files_resumes_and_its_best_config_trains(tmp_path):
    base = make_base(tmp_path)
    space = SearchSpace.from_dict(SMALL_SPACE)
    output = tmp_path / "study"
    result = tune(base, output, trials=2, space=space, verbose=False)
    states = [t.state for t in result.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    for name in ("study.db", "trials.csv", "optimization_history.png", "param_importances.png"):
        assert (output / name).stat().st_size > 0, name
    assert sorted(p.name for p in (output / "trials").iterdir()) == ["trial-0000", "trial-0001"]
    header = (output / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"value", "user_attrs_seed", "user_attrs_wql", "params_num_experts"} <= set(header)
    assert "user_attrs_config" not in header  # (in study.db and best_config.yaml)
    seeds = [t.user_attrs["seed"] for t in result.study.trials]
    assert seeds == [base.seed, base.seed + 1]

    # The best config: the best trial's values and seed, the base output_dir; it trains.
    best = min(result.study.trials, key=lambda t: t.value)
    config = TrainingConfig.from_yaml(output / "best_config.yaml")
    assert config == result.best_config
    assert config.output_dir == base.output_dir and config.seed == best.user_attrs["seed"]
    assert {key: getattr(config, key) for key in best.params} == best.params
    # ... the config the best trial trained with, but for its output directory.
    trained = output / "trials" / f"trial-{best.number:04d}"
    assert config.replace(output_dir=str(trained)) == TrainingConfig.from_yaml(
        trained / "config.yaml"
    )
    assert (trained / "final" / "model.keras").is_file()

    # Running again resumes the same study up to the asked number of trials.
    again = tune(base, output, trials=3, space=space, verbose=False)
    assert [t.number for t in again.study.trials] == [0, 1, 2]
    assert tune(base, output, trials=3, space=space, verbose=False).study.trials[-1].number == 2

    # ... but not with another base config or space.
    with pytest.raises(RunError, match=r"another base config \(old -> new: max_steps: 2 -> 3\)"):
        tune(base.replace(max_steps=3), output, trials=4, space=space, verbose=False)
    with pytest.raises(RunError, match="another search space"):
        tune(base, output, trials=4, space=SearchSpace.default(base), verbose=False)


def test_one_completed_trial_has_no_importances_and_says_so(tmp_path, capsys):
    base = make_base(tmp_path)
    study = optuna.create_study()
    config = base.replace(num_experts=2, seed=7, output_dir=str(tmp_path / "trial"))
    study.add_trial(
        optuna.trial.create_trial(
            params={"num_experts": 2},
            distributions={"num_experts": optuna.distributions.IntDistribution(2, 3)},
            value=0.5,
            user_attrs={"seed": 7, "config": config.to_dict()},
        )
    )
    result = write_results(study, base, tmp_path)
    assert (tmp_path / "optimization_history.png").is_file()
    assert not (tmp_path / "param_importances.png").exists()
    out = capsys.readouterr().out
    assert "Parameter importances need at least 2 completed trials (1 so far)" in out
    assert result.best_config == config.replace(output_dir=base.output_dir)
    assert "validation WQL 0.5, seed 7" in (tmp_path / "best_config.yaml").read_text()


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    base = make_base(tmp_path)
    output = tmp_path / "study"
    bad_space = SearchSpace.from_dict({"num_active_experts": {"type": "int", "low": 4, "high": 5}})
    with pytest.raises(SearchSpaceError, match="top_k"):
        tune(base, output, trials=1, space=bad_space)
    with pytest.raises(ValueError, match="validation_data_paths"):
        tune(base.replace(validation_data_paths=None), output, trials=1)
    with pytest.raises(ValueError, match="missing.arrow does not exist"):
        tune(base.replace(validation_data_paths=[str(tmp_path / "missing.arrow")]), output, 1)
    assert not output.exists()
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"something other than a tuning study \(notes.txt\)"):
        tune(base, output, trials=1)
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]
