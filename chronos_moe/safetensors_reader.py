"""Reading untrusted safetensors files into numpy: what the `safetensors`
library does not do for us here.

Its numpy reader has no bfloat16 (numpy has none), and its errors do not name
the tensor and the check that failed. So the header is validated here, before
anything is allocated, with a `CheckpointError` naming the file, the tensor
and the check, and BF16 is widened to float32 exactly. Writing uses the
library (`safetensors.numpy.save_file`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.errors import CheckpointError

# A safetensors header (JSON) longer than this is refused before it is read.
MAX_HEADER_BYTES = 100 * 2**20
# safetensors dtypes chronos-moe reads, with their little-endian numpy type
# (BF16 is decoded by hand: numpy has no bfloat16).
SAFETENSORS_DTYPES = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}


def read_safetensors_header(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The tensor entries of a safetensors file and the byte offset of its data.

    Everything is checked before any tensor is read (and before the header is
    read when its declared length is implausible): the 8-byte little-endian
    header length (at most `MAX_HEADER_BYTES` and within the file), the JSON
    header, each tensor's dtype, shape and `data_offsets` (inside the data, of
    `prod(shape) × itemsize` bytes), and that the tensors tile the data
    without gap, overlap or trailing bytes, as the safetensors format requires.
    So nothing the file declares can make the reader allocate more than the
    file holds. Every failure is a `CheckpointError` naming the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(
                f"{path}: {size} bytes, too short for a safetensors file (truncated?)"
            )
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{path}: declares a {length}-byte safetensors header, over the "
                f"{MAX_HEADER_BYTES}-byte limit (not a safetensors file, or corrupt)"
            )
        if length > size - 8:
            raise CheckpointError(
                f"{path}: declares a {length}-byte safetensors header, but only {size - 8} "
                "bytes follow (truncated?)"
            )
        header_bytes = handle.read(length)
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(
            f"{path}: the safetensors header is not valid JSON ({error})"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: `__metadata__` must map strings to strings")
    data_size = size - 8 - length
    spans = []
    for name, entry in header.items():
        problem = _tensor_entry_problem(entry, data_size)
        if problem:
            raise CheckpointError(f"{path}: tensor {name!r}: {problem}")
        spans.append((*entry["data_offsets"], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {name!r} {what} (data_offsets {begin})")
        end = stop
    if end != data_size:
        raise CheckpointError(
            f"{path}: the tensors cover {end} bytes of data, the file holds {data_size}"
        )
    return header, 8 + length


def _tensor_entry_problem(entry: Any, data_size: int) -> str | None:
    """What is wrong with one tensor entry of a safetensors header, if anything."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return "expected an object with exactly `dtype`, `shape` and `data_offsets`"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        return f"unsupported dtype {dtype!r} (expected one of {sorted(SAFETENSORS_DTYPES)})"

    def is_count(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(shape, list) or not all(is_count(d) for d in shape):
        return f"shape must be a list of integers >= 0. Received: {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_count, offsets))):
        return f"data_offsets must be [begin, end] integers >= 0. Received: {offsets!r}"
    begin, end = offsets
    if not begin <= end <= data_size:
        return f"data_offsets {offsets} lie outside the {data_size} bytes of data"
    expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
    if end - begin != expected:
        return f"shape {shape} of {dtype} needs {expected} bytes, data_offsets span {end - begin}"
    return None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as numpy (BF16 exactly as float32).

    The header is validated first (`read_safetensors_header`); the tensors are
    then read from the validated byte ranges, so no reader allocates more than
    the file holds (BF16 doubles in float32).
    """
    header, data_start = read_safetensors_header(path)
    tensors = {}
    with open(path, "rb") as handle:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            handle.seek(data_start + begin)
            buffer = bytearray(end - begin)
            if handle.readinto(buffer) != len(buffer):  # the file shrank since it was checked
                raise CheckpointError(f"{path}: tensor {name!r} is cut short")
            values = np.frombuffer(buffer, SAFETENSORS_DTYPES[entry["dtype"]])
            if entry["dtype"] == "BF16":  # bfloat16 is the top half of a float32: exact
                values = (values.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = values.astype(values.dtype.newbyteorder("="), copy=False).reshape(
                entry["shape"]
            )
    return tensors
