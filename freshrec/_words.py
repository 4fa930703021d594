"""Unaligned 8-byte loads and stores and a cache-line prefetch for numba kernels (one machine
instruction each), and a 64-byte compare that gives a bitmask (a few vector instructions).

`load_acquire`/`store_release` (and their relaxed forms `load_word`/`store_word`) read and write an
aligned int64 at an address atomically, and `fence_acquire`/`fence_release` order the plain loads and
stores around them: the parts of a sequence lock (`freshrec.embedding.seqlock`) between processes.

Little-endian on the machines we run on (x86-64, aarch64): byte k of the word is byte `at + k`.

>>> import numba, numpy as np
>>> @numba.njit
... def first_word(buf):
...     return load8(buf, 1)
>>> hex(first_word(np.frombuffer(b"\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08", np.uint8)))
'0x807060504030201'
>>> @numba.njit
... def tabs(buf):
...     return match64(buf, 0, 9)
>>> bin(tabs(np.frombuffer(b"a\\tb\\t" + b"c" * 60, np.uint8)))
'0b1010'
"""

from __future__ import annotations

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["AHEAD", "f32_at", "fence_acquire", "fence_release", "load8", "load_acquire", "load_word", "match64",
           "prefetch", "store8", "store_release", "store_word"]

AHEAD = 16  # items between a prefetch and its use
# LLVM names the intrinsic by its pointer type: opaque since LLVM 17, i8* before
_PREFETCH = "llvm.prefetch.p0" if llvm.llvm_version_info >= (17,) else "llvm.prefetch.p0i8"


def _word_ptr(builder, ary, at):
    return builder.bitcast(builder.gep(ary.data, [at]), ir.IntType(64).as_pointer())


@intrinsic
def load8(typingctx, buf, at):
    """The 8 bytes of a uint8 array from index `at` as one little-endian uint64 (unaligned)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load(_word_ptr(builder, ary, args[1]), align=1)
    return types.uint64(buf, at), codegen


@intrinsic
def store8(typingctx, out, at, word):
    """Write `word` as 8 bytes into a C-contiguous uint8 array at flat index `at` (unaligned)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        builder.store(args[2], _word_ptr(builder, ary, args[1]), align=1)
    return types.void(out, at, word), codegen


@intrinsic
def match64(typingctx, buf, at, byte):
    """Bit k of the uint64 set when `buf[at + k] == byte`, for k < 64 (unaligned)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        lanes = ir.VectorType(ir.IntType(8), 64)
        zeros = ir.Constant(lanes, None)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), lanes.as_pointer())
        wanted = builder.trunc(args[2], ir.IntType(8))
        one = builder.insert_element(zeros, wanted, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(one, zeros, ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
        hits = builder.icmp_unsigned("==", builder.load(ptr, align=1), splat)
        return builder.bitcast(hits, ir.IntType(64))
    return types.uint64(buf, at, byte), codegen


@intrinsic
def prefetch(typingctx, address):
    """Hint the cache line at the int64 `address` into cache for writing; changes no values.
    Kernels that visit memory in random order call it `AHEAD` items early, so misses overlap."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        pointer = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        signature = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
        hint = cgutils.get_or_insert_function(builder.module, signature, _PREFETCH)
        builder.call(hint, [pointer, i32(1), i32(3), i32(1)])  # write, keep in all levels, data
        return context.get_dummy_value()
    return types.void(address), codegen


def _int64_at(builder, address):
    return builder.inttoptr(address, ir.IntType(64).as_pointer())


def _atomic_load(ordering: str, doc: str):
    @intrinsic
    def load(typingctx, address):
        def codegen(context, builder, sig, args):
            return builder.load_atomic(_int64_at(builder, args[0]), ordering, 8)
        return types.int64(address), codegen
    load.__doc__ = doc
    return load


def _atomic_store(ordering: str, doc: str):
    @intrinsic
    def store(typingctx, address, value):
        def codegen(context, builder, sig, args):
            builder.store_atomic(args[1], _int64_at(builder, args[0]), ordering, 8)
            return context.get_dummy_value()
        return types.void(address, value), codegen
    store.__doc__ = doc
    return store


def _fence(ordering: str, doc: str):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering)
            return context.get_dummy_value()
        return types.void(), codegen
    fence.__doc__ = doc
    return fence


load_acquire = _atomic_load("acquire", "The aligned int64 at `address`, loaded atomically; no later load or store "
                                       "moves before it.")
load_word = _atomic_load("monotonic", "The aligned int64 at `address`, loaded atomically (no ordering: see the "
                                      "fences).")
store_release = _atomic_store("release", "Store the int64 `value` at the aligned `address` atomically, after every "
                                         "earlier store.")
store_word = _atomic_store("monotonic", "Store the int64 `value` at the aligned `address` atomically (no ordering: "
                                        "see the fences).")
fence_release = _fence("release", "Stores before it land before the stores after it (a store barrier).")
fence_acquire = _fence("acquire", "Loads before it complete before the loads after it (a load barrier).")


@intrinsic
def f32_at(typingctx, address):
    """The int64 `address` as a float32 pointer (for `numba.carray`)."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())
    return types.CPointer(types.float32)(address), codegen
