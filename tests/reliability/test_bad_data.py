"""Bad training data is caught when `chronos-moe train` starts (issue 9, item 9).

Each bad file, next to a good one in `training_data_paths`, makes
`chronos-moe train` exit with status 2 and one error line naming the file (and
the row and field where they apply), before the model is built (`build_model`
is replaced by a function that fails the test) and without leaving an output
directory behind. The readers' own cases (every schema error, compression,
stream format, …) are tested in `tests/data/test_arrow.py` and fuzzed in
`tests/reliability/data/test_arrow.py`.

Values: NaN, ±1e38, denormals, constants, all-NaN and too-short series give
in-range token ids and finite losses; all-NaN and too-short series are dropped
and counted per file and reason in the data report. ±inf follows the documented
policy: training refuses a file holding ±inf at start, naming it and the count
(`ChronosDataset(allow_inf=True)` reads them as missing and counts them; they
never reach the tokenizer).
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from chronos_moe.cli import main
from chronos_moe.data import write_arrow
from chronos_moe.training import run
from tests.training.helpers import N_TOKENS, make_data, make_start_checkpoint, small_config


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return make_start_checkpoint(tmp_path_factory.mktemp("start"))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("good"))[0]


def _starts(n):
    return pa.array(np.full(n, np.datetime64("2024-01-01T00:00:00", "s")), pa.timestamp("s"))


def _table(path, columns):
    with pa.ipc.new_file(str(path), pa.table(columns).schema) as writer:
        writer.write_table(pa.table(columns))


def _make(kind, path):
    """Writes the bad file `kind` at `path`; returns (the text its error must hold,
    the path the error names)."""
    series = [np.arange(100.0)] * 3
    if kind == "missing start":
        _table(path, {"target": pa.array(series)})
        return "field 'start'", path
    if kind == "missing target":
        _table(path, {"start": _starts(3), "values": pa.array(series)})
        return "field 'target'", path
    if kind == "3-D target":
        _table(path, {"start": _starts(1), "target": pa.array([[[[1.0] * 50]]])})
        return "field 'target'", path
    if kind == "ragged 2-D target":
        _table(
            path, {"start": _starts(2), "target": pa.array([[[1.0] * 50] * 2, [[1.0] * 50, [1.0]]])}
        )
        return "row 1, field 'target'", path
    if kind == "string target":
        _table(path, {"start": _starts(1), "target": pa.array([["1.0"] * 50])})
        return "field 'target'", path
    if kind == "string start":
        _table(path, {"start": pa.array(["2024-01-01", "soon"]), "target": pa.array(series[:2])})
        return "row 1, field 'start'", path
    if kind == "zero rows":
        schema = pa.schema([("start", pa.timestamp("s")), ("target", pa.list_(pa.float32()))])
        with pa.ipc.new_file(str(path), schema) as writer:
            writer.write_table(schema.empty_table())
        return "zero rows", path
    if kind == "truncated":
        data = write_arrow([np.arange(100.0)] * 50, path, rows_per_batch=10).read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return "truncated", path
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return "not Arrow data", path
    if kind == "parquet named .arrow":
        pq.write_table(pa.table({"start": _starts(3), "target": pa.array(series)}), path)
        return "Parquet", path
    if kind == "empty file":
        path.write_bytes(b"")
        return "empty file", path
    if kind == "missing file":
        return "not found", path
    if kind == "a directory":
        path.mkdir()
        return "directory", path
    if kind == "a path through a file":
        path.write_bytes(b"")
        return "", path / "inner.arrow"
    if kind == "unreadable":
        write_arrow(series, path).chmod(0)
        return "cannot open", path
    if kind == "infinite values":
        write_arrow([np.arange(100.0), np.array([1.0, np.inf, -np.inf] + [1.0] * 97)], path)
        return "field 'target': 2 non-finite value(s)", path
    if kind == "no usable series":
        write_arrow([np.ones(5), np.full(100, np.nan)], path)  # too short, all missing
        return "no usable series", path
    raise AssertionError(kind)


KINDS = [
    "missing start",
    "missing target",
    "3-D target",
    "ragged 2-D target",
    "string target",
    "string start",
    "zero rows",
    "truncated",
    "random bytes",
    "parquet named .arrow",
    "empty file",
    "missing file",
    "a directory",
    "a path through a file",
    pytest.param(
        "unreadable",
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode"),
    ),
    "infinite values",
    "no usable series",
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_data_fails_at_start_naming_the_file(start, good, tmp_path, capsys, monkeypatch, kind):
    expected, named = _make(kind, tmp_path / "bad.arrow")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(run, "build_model", no_model)
    config = small_config(start, good, tmp_path / "output")
    values = {
        **config.to_dict(),
        "training_data_paths": [str(good), str(named)],
        "probability": [0.5, 0.5],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    capsys.readouterr()
    status = main(["train", "--config", str(tmp_path / "config.yaml")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2 and captured.out == ""
    assert len(lines) == 1 and lines[0].startswith(f"chronos-moe train: error: {named}"), lines
    assert expected in lines[0]
    assert not (tmp_path / "output").exists()  # nor its lock


# ---- values ----------------------------------------------------------------------------------


def test_extreme_values_give_in_range_tokens_finite_losses_and_a_report(start, tmp_path):
    rng = np.random.default_rng(0)
    length = 80
    with_nans = rng.normal(size=length)
    with_nans[::3] = np.nan
    kept = {
        "nan here and there": with_nans,
        "+1e38": np.full(length, 1e38),
        "-1e38": np.full(length, -1e38),
        "±1e38": np.where(np.arange(length) % 2, 1e38, -1e38),
        "denormals": np.full(length, 1e-40) * rng.integers(1, 5, length),
        "zeros": np.zeros(length),
        "constant": np.full(length, 7.0),
    }
    dropped = {"all NaN": np.full(length, np.nan), "too short": np.ones(5)}
    path = write_arrow(list(kept.values()) + list(dropped.values()), tmp_path / "values.arrow")
    config = small_config(
        start, path, tmp_path / "output", max_steps=3, save_steps=3, shuffle_buffer_length=0
    )
    dataset = run.build_dataset(config)
    report = dataset.report.sources[0]
    assert report.name.endswith("values.arrow")
    assert (report.rows, report.kept, report.too_short, report.too_many_missing) == (9, 7, 1, 1)
    for index in range(40):  # windows of every kept series
        batch = dataset[index]
        ids = batch["input_ids"]
        assert ids.min() >= 0 and ids.max() < N_TOKENS
        labels = batch["labels"][batch["labels"] != -100]
        assert labels.min() >= 0 and labels.max() < N_TOKENS
    result = run.train(config, verbose=False)
    assert all(np.isfinite(row["loss"]) for row in result.log)
    written = json.loads((result.output_dir / "data_report.json").read_text())["sources"][0]
    assert (written["kept"], written["too_short"], written["too_many_missing"]) == (7, 1, 1)
