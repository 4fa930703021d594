"""Raw values -> 64-bit ids, salted by field, vectorised over Arrow arrays with numba (features
hash ids with it, the joiner its keys).

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

from freshrec._words import load8

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_KEEP_63_BITS = np.uint64(0x7FFFFFFFFFFFFFFF)


def field_salt(name: str) -> int:
    """A stable 64-bit salt for a field (or shared table) name; the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


@numba.njit
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit
def _round(h, word):
    """Mix one little-endian 8-byte word into the state (an xxHash64-style round)."""
    h ^= _rotl(word * _P2, 31) * _P1
    return _rotl(h, 27) * _P1 + _P3


@numba.njit
def fmix64(h):
    """murmur3's 64-bit finaliser: every input bit flips about half the output bits."""
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


@numba.njit
def _finish(h):
    """The finaliser, then the top bit cleared and 0 mapped to 1."""
    h = fmix64(h) & _KEEP_63_BITS
    return np.int64(h) if h != np.uint64(0) else np.int64(1)


@numba.njit
def is_valid(bits, offset, i):
    """Arrow validity: bit `offset + i` of the bitmap (an empty bitmap means no nulls)."""
    if len(bits) == 0:
        return True
    at = offset + i
    return (bits[at >> 3] >> (at & 7)) & 1 == 1


@numba.njit(nogil=True, cache=True)
def _hash_text(data, offsets, bits, bit_offset, salt, out):
    """Each value's bytes in rounds of 8 (the tail zero-padded), seeded by salt and length.

    Null values hash as the empty string.
    """
    for i in range(len(out)):
        start = offsets[i]
        end = offsets[i + 1] if is_valid(bits, bit_offset, i) else start
        h = salt ^ (np.uint64(end - start) * _P3)
        at = start
        while at + 8 <= end:
            h = _round(h, load8(data, at))
            at += 8
        if at < end:
            tail = np.uint64(0)
            for k in range(end - at):
                tail |= np.uint64(data[at + k]) << np.uint64(8 * k)
            h = _round(h, tail)
        out[i] = _finish(h)


@numba.njit
def _decimal_hash(v, salt):
    """The hash of the decimal text of `v` (as `_hash_text` gives it), built in registers."""
    magnitude = np.uint64(-(v + 1)) + np.uint64(1) if v < 0 else np.uint64(v)
    n = 1 if v < 0 else 0
    probe = magnitude
    while True:
        n += 1
        probe //= np.uint64(10)
        if probe == np.uint64(0):
            break
    first = np.uint64(45) if v < 0 else np.uint64(0)  # at most 20 chars: three words
    second, third = np.uint64(0), np.uint64(0)
    for k in range(n - 1, (1 if v < 0 else 0) - 1, -1):
        byte = (np.uint64(48) + magnitude % np.uint64(10)) << np.uint64(8 * (k % 8))
        magnitude //= np.uint64(10)
        if k < 8:
            first |= byte
        elif k < 16:
            second |= byte
        else:
            third |= byte
    h = _round(salt ^ (np.uint64(n) * _P3), first)
    if n > 8:
        h = _round(h, second)
    if n > 16:
        h = _round(h, third)
    return _finish(h)


@numba.njit(nogil=True, cache=True)
def _hash_integers(values, bits, bit_offset, salt, out):
    """Hash each integer through its decimal text, so 42 and "42" agree; nulls as ""."""
    empty = _finish(salt)
    for i in range(len(out)):
        out[i] = _decimal_hash(values[i], salt) if is_valid(bits, bit_offset, i) else empty


def validity_bitmap(values: pa.Array) -> tuple[np.ndarray, int]:
    """(bitmap bytes, bit offset) of an Arrow array; an empty bitmap when it has no nulls."""
    bitmap = values.buffers()[0]
    if values.null_count == 0 or bitmap is None:
        return np.zeros(0, np.uint8), 0
    return np.frombuffer(bitmap, np.uint8), values.offset


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
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        data, offsets = _text_buffers(values)
        _hash_text(data, offsets, *validity_bitmap(values), salt64, out)
    elif pa.types.is_uint64(kind):
        return hash_values(values.cast(pa.string()), salt)  # may exceed int64: hash its decimal text
    elif pa.types.is_integer(kind):
        ints = values.cast(pa.int64())
        _hash_integers(ints.fill_null(0).to_numpy(), *validity_bitmap(ints), salt64, out)
    elif pa.types.is_null(kind):
        out[:] = missing_id(salt)
    else:
        raise TypeError(f"ids are hashed from strings or integers, not {kind} "
                        "(an id never passes through float)")
    return out


def _hash_dictionary(values: pa.DictionaryArray, salt: int) -> np.ndarray:
    codes = hash_values(values.dictionary, salt)
    indices = values.indices.fill_null(0).to_numpy(zero_copy_only=False)
    out = codes[indices] if len(codes) else np.empty(len(values), np.int64)
    if values.null_count:
        out[values.is_null().to_numpy(zero_copy_only=False)] = missing_id(salt)
    return out


def missing_id(salt: int) -> int:
    """The id a null or empty value gets in the field with this salt."""
    return int(hash_values(pa.array([""]), salt)[0])
