"""The Arrow reader under hostile input (issue 9, item 7).

Valid Arrow files (IPC file and stream formats, multi-batch, multivariate,
GluonTS' flat layout, compressed, with nulls) are mutated byte by byte and read
in a separate process (`fuzzing.ReaderProcess`): only `DataError`, no crash, no
hang over 5 s, no allocation beyond 4× the file size + 1 MiB.

The fixed cases below are inputs that once crashed the reader (an IndexError,
a segfault in pyarrow, a UnicodeDecodeError) before it validated every record
batch in full and decoded the schema's names under a `DataError`.
"""

import struct

import numpy as np
import pyarrow as pa
import pytest

from chronos_moe.data.arrow import write_arrow
from tests.reliability.fuzzing import ReaderProcess, check_read, fuzz, mutated_bytes, profiles


@pytest.fixture(scope="module")
def reader():
    reader = ReaderProcess("arrow", "data.arrow")
    yield reader
    reader.close()
    print(f"\narrow reader, inputs by outcome: {reader.counts}")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files in every layout the reader accepts."""
    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    files = {
        "batches": write_arrow(
            [np.arange(n, dtype="f4") for n in (5, 17, 3)], folder / "a.arrow", rows_per_batch=2
        ),
        "multivariate": write_arrow([rng.normal(size=(2, n)) for n in (4, 6)], folder / "b.arrow"),
        "compressed": write_arrow(
            [rng.normal(size=n) for n in (9, 2)], folder / "c.arrow", compression="zstd"
        ),
    }
    seeds = {name: path.read_bytes() for name, path in files.items()}
    starts = pa.array(np.array(["2000-01-01"] * 3, "datetime64[s]"))
    targets = pa.array([[1.0, None, 2.0], [3.0], [np.nan, 4.0]], pa.list_(pa.float32()))
    table = pa.table({"start": starts, "target": targets})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    seeds["stream_with_nulls"] = sink.getvalue().to_pybytes()
    flat = pa.table(  # GluonTS ArrowWriter(flatten_arrays=True)
        {
            "start": pa.array(["2001-01-01", "2001-02-01"]),
            "target": pa.array([list(range(6)), list(range(4))], pa.list_(pa.float64())),
            "target._np_shape": pa.array([[2, 3], [1, 4]], pa.list_(pa.int64())),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, flat.schema) as writer:
        writer.write_table(flat)
    seeds["flat_shape"] = sink.getvalue().to_pybytes()
    return seeds


def test_every_seed_reads(reader, seeds):
    for name, data in seeds.items():
        assert check_read(reader, data)["outcome"] == "ok", name


@pytest.mark.parametrize("profile", profiles(ci_examples=300))
def test_fuzz_arrow_bytes(reader, seeds, profile):
    fuzz(reader, mutated_bytes(list(seeds.values())), profile)


def replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, f"{old!r} not found in the seed"
    return data.replace(old, new)


def test_list_offsets_past_the_values(reader, seeds):
    offsets = np.array([0, 5, 22], "<i4").tobytes()  # rows of 5 and 17 values
    corrupt = np.array([0, 5, 2**30], "<i4").tobytes()
    check_read(reader, replaced(seeds["batches"], offsets, corrupt))


def test_negative_values_length(reader, seeds):
    node = struct.pack("<qq", 22, 0)  # the values' FieldNode: length 22, null count 0
    check_read(reader, replaced(seeds["batches"], node, struct.pack("<qq", -22, 0)))


def test_field_name_that_is_not_utf8(reader, seeds):
    check_read(reader, replaced(seeds["batches"], b"target", b"\xfftarge"))
