"""`save_arrays`: numpy arrays into a safetensors file, written straight from the arrays' memory.

`safetensors.numpy.save_file` copies every array into bytes and then into one buffer the size of
the file before writing it; for the tables' deltas and checkpoints (tens of MB a second) those
copies cost more than the write. This writes the same format (an 8-byte little-endian header
length, the JSON header padded with spaces to 8 bytes, then the arrays back to back) with one
`write` per array and no copy; `safetensors` reads it back. A leaf module that imports nothing of ours.

>>> import tempfile, numpy as np
>>> from safetensors.numpy import load_file
>>> path = tempfile.mkdtemp() + "/t.safetensors"
>>> save_arrays({"ids": np.arange(3), "rows": np.ones((3, 2), np.float32)}, path, {"format": "demo"})
>>> {k: v.tolist() for k, v in sorted(load_file(path).items())}
{'ids': [0, 1, 2], 'rows': [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]}
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import numpy as np

__all__ = ["save_arrays"]

_DTYPES = {np.dtype(t): code for t, code in (
    (np.bool_, "BOOL"), (np.uint8, "U8"), (np.int8, "I8"), (np.uint16, "U16"), (np.int16, "I16"),
    (np.uint32, "U32"), (np.int32, "I32"), (np.uint64, "U64"), (np.int64, "I64"), (np.float16, "F16"),
    (np.float32, "F32"), (np.float64, "F64"))}


def save_arrays(arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str],
                metadata: Mapping[str, str] | None = None) -> None:
    """Write `arrays` (numeric, any layout: non-contiguous ones are copied) and the string
    `metadata` to `path` in the safetensors format. ValueError for a dtype safetensors lacks."""
    ready = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, array in ready.items():
        if array.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {array.dtype} has no safetensors code")
        if array.dtype.byteorder == ">":
            raise ValueError(f"{name}: big-endian arrays are not safetensors'")
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in ready.values():
            if array.nbytes:
                f.write(memoryview(array.reshape(-1)).cast("B"))
