"""ChronosDataset: tokenized batches, exact resume, validation mode, data forms, errors."""

import json

import numpy as np
import pytest

from chronos_moe.config import ChronosBoltConfig, ChronosConfig
from chronos_moe.data import (
    ArrowSeriesFile,
    ChronosDataset,
    DataError,
    InMemorySeries,
    WindowId,
    generate_sample_series,
)
from chronos_moe.data.windows import extract_window
from chronos_moe.tokenizer import MeanScaleUniformBins

CONFIG = ChronosConfig(context_length=32, prediction_length=8, n_tokens=256)


def _dataset(data, **kwargs):
    arguments = {"batch_size": 4, "min_past": 16, **kwargs}
    return ChronosDataset(data, CONFIG, **arguments)


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


@pytest.fixture
def two_files(arrow_file):
    first = arrow_file(generate_sample_series(12, 150, seed=1), name="first.arrow")
    second = arrow_file(generate_sample_series(5, 90, seed=2), name="second.arrow")
    return [first, second]


def test_batches_have_the_documented_shapes_and_dtypes(two_files):
    dataset = _dataset(two_files)
    batch = dataset[0]
    assert batch["input_ids"].shape == (4, 33) and batch["input_ids"].dtype == np.int32
    assert batch["attention_mask"].shape == (4, 33) and batch["attention_mask"].dtype == bool
    assert batch["labels"].shape == (4, 9) and batch["labels"].dtype == np.int32
    assert (batch["input_ids"][:, -1] == CONFIG.eos_token_id).all()
    assert (batch["labels"][:, -1] == CONFIG.eos_token_id).all()
    assert batch["input_ids"].min() >= 0 and batch["input_ids"].max() < CONFIG.n_tokens
    assert dataset.num_batches is None
    with pytest.raises(TypeError):
        len(dataset)


def test_batches_equal_tokenizing_their_windows_directly(two_files):
    dataset = _dataset(two_files, probability=[0.6, 0.4], seed=3)
    sources = [ArrowSeriesFile(path) for path in two_files]
    tokenizer = MeanScaleUniformBins.from_config(CONFIG)
    for index in range(6):
        batch = dataset[index]
        for row, window_id in enumerate(dataset.batch_identities(index)):
            window = extract_window(sources[window_id.file], window_id, 32, 8, 0.2, seed=3)
            ids, mask, scale = tokenizer.context_input_transform(window.past[None])
            labels, label_mask = tokenizer.label_input_transform(window.future[None], scale)
            np.testing.assert_array_equal(batch["input_ids"][row], ids[0])
            np.testing.assert_array_equal(batch["attention_mask"][row], mask[0])
            np.testing.assert_array_equal(
                batch["labels"][row], np.where(label_mask, labels, -100)[0]
            )


def test_bolt_batches_are_the_same_windows_as_values(two_files):
    bolt = ChronosBoltConfig(context_length=64, prediction_length=4)
    dataset = ChronosDataset(
        two_files, bolt, context_length=32, prediction_length=8, batch_size=4, min_past=16, seed=3
    )
    tokens = _dataset(two_files, seed=3)
    sources = [ArrowSeriesFile(path) for path in two_files]
    for index in range(3):
        batch = dataset[index]
        assert sorted(batch) == ["context", "target"]
        assert batch["context"].shape == (4, 32) and batch["target"].shape == (4, 8)
        assert batch["context"].dtype == batch["target"].dtype == np.float32
        assert dataset.batch_identities(index) == tokens.batch_identities(index)
        for row, window_id in enumerate(dataset.batch_identities(index)):
            window = extract_window(sources[window_id.file], window_id, 32, 8, 0.2, seed=3)
            np.testing.assert_array_equal(batch["context"][row], window.past)
            np.testing.assert_array_equal(batch["target"][row], window.future)


def test_missing_future_values_become_minus_100_labels():
    series = [np.where(np.arange(100) % 3 == 0, np.nan, 1.0 + np.arange(100)) for _ in range(4)]
    batch = _dataset(series, drop_prob=0.0)[0]
    labels, mask = batch["labels"][:, :-1], batch["attention_mask"][:, :-1]
    assert (labels == -100).any() and (labels != -100).any()
    assert ((labels == -100) | (labels >= CONFIG.n_special_tokens)).all()
    assert not mask.all()


def test_reading_an_index_again_gives_the_same_batch(two_files):
    # Keras reads batch 0 once to build the model and again to train on it.
    dataset = _dataset(two_files)
    first = dataset[0]
    _assert_batches_equal(dataset[0], first)
    later = {i: dataset[i] for i in range(1, 40)}
    # far-away indices are recomputed from saved stream states
    _assert_batches_equal(dataset[0], first)
    _assert_batches_equal(dataset[23], later[23])
    _assert_batches_equal(dataset[39], later[39])
    fresh = _dataset(two_files)
    _assert_batches_equal(fresh[17], later[17])  # skipping ahead: the same stream


def test_get_state_set_state_resumes_exactly_mid_stream(two_files):
    dataset = _dataset(two_files, probability=[0.7, 0.3], shuffle_buffer_length=20, seed=9)
    for index in range(13):
        dataset[index]
    state = json.loads(json.dumps(dataset.get_state()))  # JSON-serialisable
    assert state["position"] == 13
    expected = [(dataset[13 + i], dataset.batch_identities(13 + i)) for i in range(20)]

    restored = _dataset(two_files, probability=[0.7, 0.3], shuffle_buffer_length=20, seed=9)
    restored.set_state(state)
    for i, (batch, identities) in enumerate(expected):
        _assert_batches_equal(restored[i], batch)
        assert restored.batch_identities(i) == identities
    assert restored.report == dataset.report
    # a state taken after resuming continues the absolute position
    assert restored.get_state()["position"] == 33


def test_get_state_for_an_earlier_index_supports_read_ahead(two_files):
    dataset = _dataset(two_files, seed=4)
    batches = [dataset[i] for i in range(10)]  # read ahead of training up to 9
    state = dataset.get_state(6)  # training finished batches 0..5
    restored = _dataset(two_files, seed=4)
    restored.set_state(state)
    for i in range(4):
        _assert_batches_equal(restored[i], batches[6 + i])


def test_state_of_a_fresh_dataset_restarts_the_stream(two_files):
    dataset = _dataset(two_files)
    state = dataset.get_state()
    assert state["position"] == 0
    first = dataset[0]
    dataset.set_state(state)
    _assert_batches_equal(dataset[0], first)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "seed"),
        ({"batch_size": 8}, "batch_size"),
        ({"min_past": 20}, "min_past"),
        ({"probability": [0.5, 0.5]}, "probability"),
    ],
)
def test_set_state_refuses_other_settings_naming_them(two_files, change, named):
    dataset = _dataset(two_files, probability=[0.9, 0.1])
    state = dataset.get_state()
    other = _dataset(two_files, **{"probability": [0.9, 0.1], **change})
    with pytest.raises(DataError, match=named):
        other.set_state(state)


def test_set_state_refuses_other_data(two_files, arrow_file):
    state = _dataset(two_files).get_state()
    other = [two_files[0], arrow_file(generate_sample_series(6, 90, seed=2), name="second.arrow")]
    with pytest.raises(DataError, match="sources"):
        _dataset(other).set_state(state)
    with pytest.raises(DataError, match="not a ChronosDataset state"):
        _dataset(two_files).set_state({"position": 3})


def test_validation_mode_is_one_finite_pass_over_last_windows(two_files):
    dataset = _dataset(two_files, mode="validation", batch_size=5)
    assert dataset.num_batches == len(dataset) == 4  # 12 + 5 series, all long enough
    identities = [i for b in range(4) for i in dataset.batch_identities(b)]
    assert len(identities) == 17
    assert [i.file for i in identities] == [0] * 12 + [1] * 5
    sources = [ArrowSeriesFile(path) for path in two_files]
    for window_id in identities:
        assert window_id.cut == sources[window_id.file].lengths[window_id.series] - 8
        assert window_id.cycle == 0
    assert dataset[3]["input_ids"].shape == (2, 33)  # the last batch is smaller
    with pytest.raises(IndexError):
        dataset[4]
    _assert_batches_equal(dataset[1], _dataset(two_files, mode="validation", batch_size=5)[1])


def test_steps_makes_training_finite(two_files):
    dataset = _dataset(two_files, steps=5)
    assert dataset.num_batches == len(dataset) == 5
    dataset[4]
    with pytest.raises(IndexError):
        dataset[5]


def test_in_memory_lists_arrays_and_sources_are_accepted():
    series = generate_sample_series(6, 80, seed=0)
    from_list = _dataset(series)
    from_array = _dataset(np.stack(series))
    from_source = _dataset(InMemorySeries(series))
    for dataset in (from_array, from_source):
        _assert_batches_equal(dataset[0], from_list[0])
    mixed = _dataset([InMemorySeries(series[:3]), InMemorySeries(series[3:])])
    assert {i.file for b in range(5) for i in mixed.batch_identities(b)} == {0, 1}


def test_a_long_format_dataframe_is_accepted():
    pd = pytest.importorskip("pandas")
    series = generate_sample_series(4, 60, seed=0)
    frame = pd.DataFrame(
        {
            "item": np.repeat(["b", "a", "d", "c"], 60),  # series in order of appearance
            "time": np.tile(pd.date_range("2024-01-01", periods=60, freq="h"), 4),
            "value": np.concatenate(series),
        }
    ).iloc[::-1]  # time running backwards: sorted per series
    frame = frame.iloc[
        np.argsort(frame["item"].map({"b": 0, "a": 1, "d": 2, "c": 3}), kind="stable")
    ]
    dataset = _dataset(
        frame, id_column="item", timestamp_column="time", target_column="value", drop_prob=0.0
    )
    reference = _dataset(series, drop_prob=0.0)
    _assert_batches_equal(dataset[0], reference[0])
    with pytest.raises(DataError, match="missing column"):
        _dataset(frame)  # default column names: id/timestamp/target


def test_tokenizer_or_config_and_length_overrides():
    series = generate_sample_series(4, 100, seed=0)
    from_config = _dataset(series)
    from_tokenizer = ChronosDataset(
        series, MeanScaleUniformBins.from_config(CONFIG), batch_size=4, min_past=16
    )
    _assert_batches_equal(from_config[0], from_tokenizer[0])
    longer = _dataset(series, context_length=48, prediction_length=4)
    assert longer[0]["input_ids"].shape == (4, 49) and longer[0]["labels"].shape == (4, 5)


def test_data_report_counts_drops_per_file_and_reason(arrow_file):
    series = [np.ones(100), np.ones(10), np.full(100, np.nan), np.array([np.inf] * 5 + [1.0] * 95)]
    path = arrow_file(series, name="mixed.arrow")
    report = _dataset([path], allow_inf=True).report.sources[0]
    assert report.name.endswith("mixed.arrow")
    assert (report.series, report.kept, report.too_short, report.too_many_missing) == (4, 2, 1, 1)
    assert report.inf_values == 5
    assert "too_short" in str(_dataset([path], allow_inf=True).report)


def test_infinite_targets_are_refused_unless_allowed(arrow_file):
    path = arrow_file([np.ones(100), np.array([1.0, np.inf, -np.inf] + [1.0] * 97)], name="i.arrow")
    with pytest.raises(DataError, match=r"i.arrow: field 'target': 2 non-finite value\(s\)"):
        _dataset([path])
    with pytest.raises(DataError, match=r"<memory>: field .target.: 1 non-finite"):
        _dataset([np.ones(100), np.array([np.inf] + [1.0] * 99)])
    assert _dataset([path], allow_inf=True).report.sources[0].inf_values == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "test"}, ValueError, "`mode`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"steps": 0}, ValueError, "`steps`"),
        ({"probability": [1.0]}, ValueError, "`probability`"),
        ({"mode": "validation", "drop_prob": 0.1}, ValueError, "`drop_prob`"),
        ({"use_multiprocessing": True}, ValueError, "use_multiprocessing"),
    ],
)
def test_argument_errors(two_files, kwargs, error, message):
    with pytest.raises(error, match=message):
        _dataset(two_files, **kwargs)


def test_bad_data_fails_at_construction_naming_the_file(arrow_file, tmp_path):
    with pytest.raises(DataError, match="nope.arrow: file not found"):
        _dataset(str(tmp_path / "nope.arrow"))
    short = arrow_file([np.ones(10)] * 3, name="short.arrow")
    with pytest.raises(DataError, match="short.arrow: no usable series"):
        _dataset([short])
    with pytest.raises(TypeError, match="mixes data sources"):
        _dataset([short, np.ones(100)])
    with pytest.raises(ValueError, match="must not be empty"):
        _dataset([])
    with pytest.raises(TypeError, match="`tokenizer`"):
        ChronosDataset([np.ones(100)], tokenizer="t5")


def test_window_identities_are_named_tuples(two_files):
    identity = _dataset(two_files).batch_identities(0)[0]
    assert isinstance(identity, WindowId)
    assert identity._fields == ("file", "series", "cut", "cycle")


def test_multivariate_rows_give_one_series_per_dimension(arrow_file):
    rows = [np.stack([np.arange(100.0), 1000 + np.arange(100.0)]) for _ in range(3)]
    dataset = _dataset(arrow_file(rows), mode="validation", batch_size=6)
    assert dataset.report.sources[0].rows == 3 and dataset.report.sources[0].series == 6
    assert [i.series for i in dataset.batch_identities(0)] == list(range(6))


def test_the_shards_of_a_batch_make_the_global_batch():
    from chronos_moe.errors import IndivisibleBatchError

    series = [np.sin(np.arange(120) / 4.0) + 2.0 + k for k in range(6)]
    config = ChronosConfig(context_length=16, prediction_length=4)
    whole = ChronosDataset(series, config, batch_size=6, min_past=8)
    shards = [ChronosDataset(series, config, batch_size=6, min_past=8) for _ in range(3)]
    for index, shard in enumerate(shards):
        shard.shard(index, 3)
    for step in range(3):
        for name, value in whole[step].items():
            joined = np.concatenate([shard[step][name] for shard in shards])
            np.testing.assert_array_equal(joined, value)
        assert shards[2].batch_identities(step) == whole.batch_identities(step)  # global
    assert shards[1].get_state()["position"] == whole.get_state()["position"]
    with pytest.raises(IndivisibleBatchError, match="processes=4, batch_size=6"):
        ChronosDataset(series, config, batch_size=6, min_past=8).shard(0, 4)
