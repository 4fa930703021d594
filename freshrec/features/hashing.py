"""Raw values -> 64-bit ids, salted by field, vectorised over Arrow arrays with numba.

Every raw value is hashed through its text: an integer 42 and the string "42" give the same
id, so the same user arriving from a CSV file and from a JSON event gets one row. Floats are
refused (an id never passes through float). Null and empty values share a per-field
"missing" id. Ids are non-negative int64 (the top bit is cleared), never 0, so tables may use
negative numbers and 0 as sentinels.

The same value in two fields gets two unrelated ids because the salt differs:

>>> import pyarrow as pa
>>> a = hash_values(pa.array(["42", "7"]), field_salt("user_id"))
>>> b = hash_values(pa.array([42, 7]), field_salt("user_id"))
>>> c = hash_values(pa.array([42, 7]), field_salt("item_id"))
>>> bool((a == b).all()), bool((a != c).all()), a.dtype.name
(True, True, 'int64')
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_FNV_PRIME = np.uint64(0x100000001B3)
_KEEP_63_BITS = np.uint64(0x7FFFFFFFFFFFFFFF)


def field_salt(name: str) -> int:
    """A stable 64-bit salt for a field (or shared table) name; the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


@numba.njit(inline="always")
def _finish(h):
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    h &= _KEEP_63_BITS
    return np.int64(h) if h != np.uint64(0) else np.int64(1)


@numba.njit(nogil=True, cache=True)
def _hash_text(data, offsets, valid, salt, out):
    """FNV-1a over each value's bytes, seeded by the salt, then a murmur3 finaliser."""
    for i in range(len(out)):
        h = salt
        if valid[i]:
            for j in range(offsets[i], offsets[i + 1]):
                h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        out[i] = _finish(h)


@numba.njit(nogil=True, cache=True)
def _hash_integers(values, valid, salt, out):
    """Hash each integer through its decimal text, so 42 and "42" agree."""
    digits = np.empty(20, dtype=np.uint8)
    for i in range(len(out)):
        h = salt
        if valid[i]:
            v = values[i]
            negative = v < 0
            magnitude = np.uint64(-(v + 1)) + np.uint64(1) if negative else np.uint64(v)
            n = 0
            while True:
                digits[n] = np.uint8(48) + np.uint8(magnitude % np.uint64(10))
                magnitude //= np.uint64(10)
                n += 1
                if magnitude == np.uint64(0):
                    break
            if negative:
                h = (h ^ np.uint64(45)) * _FNV_PRIME
            for j in range(n - 1, -1, -1):
                h = (h ^ np.uint64(digits[j])) * _FNV_PRIME
        out[i] = _finish(h)


def _validity(values: pa.Array) -> np.ndarray:
    if values.null_count == 0:
        return np.ones(len(values), dtype=np.bool_)
    return values.is_valid().to_numpy(zero_copy_only=False)


def _text_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offset_type = np.int64 if pa.types.is_large_string(values.type) or pa.types.is_large_binary(
        values.type) else np.int32
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[values.offset: values.offset + len(values) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def hash_values(values: pa.Array | pa.ChunkedArray, salt: int) -> np.ndarray:
    """Hash an Arrow array of strings, binaries or integers (nullable) to int64 ids."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        return _hash_dictionary(values, salt)
    out = np.empty(len(values), dtype=np.int64)
    salt64 = np.uint64(salt)
    valid = _validity(values)
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        data, offsets = _text_buffers(values)
        _hash_text(data, offsets, valid, salt64, out)
    elif pa.types.is_uint64(kind):
        return hash_values(values.cast(pa.string()), salt)  # may exceed int64: hash its decimal text
    elif pa.types.is_integer(kind):
        ints = values.cast(pa.int64()).fill_null(0).to_numpy()
        _hash_integers(ints, valid, salt64, out)
    elif pa.types.is_null(kind):
        _hash_text(np.zeros(0, np.uint8), np.zeros(len(values) + 1, np.int32), valid, salt64, out)
    else:
        raise TypeError(f"ids are hashed from strings or integers, not {kind} "
                        "(an id never passes through float)")
    return out


def _hash_dictionary(values: pa.DictionaryArray, salt: int) -> np.ndarray:
    codes = hash_values(values.dictionary, salt)
    indices = values.indices.fill_null(0).to_numpy(zero_copy_only=False)
    out = codes[indices] if len(codes) else np.empty(len(values), np.int64)
    if values.null_count:
        out[~_validity(values)] = missing_id(salt)
    return out


def missing_id(salt: int) -> int:
    """The id a null or empty value gets in the field with this salt."""
    return int(hash_values(pa.array([""]), salt)[0])
