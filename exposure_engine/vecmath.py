"""Scalar float32 helpers for numba pixel kernels that LLVM can vectorise: ``pow_f32``, ``log2_f32``, ``cos_pi``,
``fmin``/``fmax``/``clamp`` and bit-level access (``f32_bits``).

numba lowers ``x ** e`` and ``math.cos`` to scalar libm calls (``powf``, ``cosf``) unless Intel SVML is
available, and the PyPI llvmlite build has no SVML support (``llvmlite.binding.targets.has_svml()`` is False),
so a loop that calls them runs one value at a time. These helpers use only arithmetic, compare-and-select,
``floor``, integer shifts and float <-> int bit casts, which all vectorise (AVX2 / AVX-512).

Accuracy (float32 against float64, checked in tests/test_render.py): ``pow_f32`` within 3e-7 relative for
positive normal inputs and exponents in [1/3, 3]; ``log2_f32`` within 2e-7 absolute; ``cos_pi`` within 2e-7, and within 1 ulp of the correctly
rounded value near 0 and 1.
The polynomials are plain Taylor series (an atanh series for the logarithm), truncated where the next term is
below float32 resolution on the reduced range.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_f32 = np.float32


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE-754 bits of a float32 as an int32 (a bit cast, not a conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def exponent_f32(typingctx, x):
    """The unbiased binary exponent of a positive normal float32 as a float32 (floor(log2 x)); 128 for inf.

    Written as LLVM IR so the integer work stays 32-bit: numba would widen int32 arithmetic to int64, which
    halves the vector width."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        e = builder.and_(builder.lshr(bits, ir.Constant(i32, 23)), ir.Constant(i32, 0xFF))
        return builder.sitofp(builder.sub(e, ir.Constant(i32, 127)), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def mantissa_f32(typingctx, x):
    """The significand of a positive normal float32, in [1, 2) (``x / 2**exponent_f32(x)``)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        m = builder.or_(builder.and_(bits, ir.Constant(i32, 0x007FFFFF)), ir.Constant(i32, 0x3F800000))
        return builder.bitcast(m, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def pow2i_f32(typingctx, n):
    """2^n as a float32 for a float32 holding an integer n in [-126, 128] (128 gives +inf)."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


_FASTMATH = {"contract"}


def _njit(fn):
    # error_model="numpy": a float division by zero gives inf instead of a Python exception, whose check is a
    # branch that stops LLVM from vectorising the loop. Not inlined by numba (slow to compile): these take and
    # return scalars only, so LLVM inlines them into the calling loop before vectorising it.
    # fastmath "contract" only: multiply-adds may become FMAs (one rounding instead of two). No reassociation
    # and no finite-math assumptions, so selects, clamps and inf handling keep their IEEE meaning.
    return numba.njit(fn, cache=True, fastmath=_FASTMATH, error_model="numpy")


# log2(m) for m in [sqrt(1/2), sqrt(2)): with f = (m - 1) / (m + 1), ln m = 2 atanh f = 2 (f + f^3/3 + ...);
# |f| <= 0.1716, so the f^11 term (< 1e-9) is below float32 resolution.
_L1 = _f32(2.0 / math.log(2.0))
_L3 = _f32(2.0 / (3.0 * math.log(2.0)))
_L5 = _f32(2.0 / (5.0 * math.log(2.0)))
_L7 = _f32(2.0 / (7.0 * math.log(2.0)))
_L9 = _f32(2.0 / (9.0 * math.log(2.0)))
_SQRT2 = _f32(math.sqrt(2.0))

# 2^r = e^(r ln 2) for r in [-1/2, 1/2]: Taylor to degree 7 (the degree-8 term is < 6e-9).
# The coefficients are doubled so that the polynomial gives 2 * 2^r (see _exp2_split).
_E1x2, _E2x2, _E3x2, _E4x2, _E5x2, _E6x2, _E7x2 = (_f32(2.0 * math.log(2.0) ** k / math.factorial(k))
                                                 for k in range(1, 8))
_FMAX = _f32(np.finfo(np.float32).max)

# cos(z) for z in [0, pi/2]: Taylor to z^14 (the z^16 term is < 2e-10).
_C2, _C4, _C6, _C8, _C10, _C12, _C14 = (_f32((-1.0) ** (k // 2) / math.factorial(k)) for k in range(2, 15, 2))
_PI = _f32(math.pi)


def _select_codegen(context, builder, ty, op, x, y):
    """``x if x <op> y else y`` in LLVM IR (one compare, one select) for a float or integer type ``ty``."""
    if isinstance(ty, types.Float):
        cond = builder.fcmp_ordered(op, x, y)
    else:
        cond = builder.icmp_signed(op, x, y)
    return builder.select(cond, x, y)


def _unified(typingctx, *tys):
    ty = typingctx.unify_types(*tys)
    return ty if isinstance(ty, (types.Float, types.Integer)) else None


# min / max / clamp as compare-and-select written straight into the LLVM IR. Python's min/max compile to
# calls of numba's generic *args implementation, which LLVM does not always inline before its loop
# vectoriser runs; small @njit helpers inlined by numba work but each inline costs ~0.1 s of compile time.
# NaN: fmin(nan, y) = y, fmax(nan, y) = y, clamp(nan, lo, hi) = lo (inputs with NaN are rejected up front).


@intrinsic
def fmin(typingctx, a, b):
    """The smaller of ``a`` and ``b`` (``a if a < b else b``), unified numeric type."""
    ty = _unified(typingctx, a, b)
    if ty is None:
        return None

    def codegen(context, builder, signature, args):
        x, y = (context.cast(builder, v, t, ty) for v, t in zip(args, signature.args))
        return _select_codegen(context, builder, ty, "<", x, y)

    return ty(a, b), codegen


@intrinsic
def fmax(typingctx, a, b):
    """The larger of ``a`` and ``b`` (``a if a > b else b``), unified numeric type."""
    ty = _unified(typingctx, a, b)
    if ty is None:
        return None

    def codegen(context, builder, signature, args):
        x, y = (context.cast(builder, v, t, ty) for v, t in zip(args, signature.args))
        return _select_codegen(context, builder, ty, ">", x, y)

    return ty(a, b), codegen


@intrinsic
def clamp(typingctx, x, lo, hi):
    """``x`` limited to [lo, hi] (lo for NaN): two selects."""
    ty = _unified(typingctx, x, lo, hi)
    if ty is None:
        return None

    def codegen(context, builder, signature, args):
        v, a, b = (context.cast(builder, v, t, ty) for v, t in zip(args, signature.args))
        return _select_codegen(context, builder, ty, "<", _select_codegen(context, builder, ty, ">", v, a), b)

    return ty(x, lo, hi), codegen


@_njit
def _log2_parts(x):
    """(k, l) with log2(x) = k + l, k an integer-valued float32, |l| <= 1/2; x positive normal float32."""
    k = exponent_f32(x)
    m = mantissa_f32(x)  # [1, 2)
    big = m > _SQRT2  # move m to [sqrt(1/2), sqrt(2)) so that |f| stays small
    m = m * _f32(0.5) if big else m
    k = k + _f32(1.0) if big else k
    f = (m - _f32(1.0)) / (m + _f32(1.0))
    f2 = f * f
    return k, f * (_L1 + f2 * (_L3 + f2 * (_L5 + f2 * (_L7 + f2 * _L9))))


@_njit
def _exp2_split(n, r):
    """2^(n + r) for a float32 integer ``n`` and any float32 ``r``: n carries the exponent exactly."""
    m = np.floor(r + _f32(0.5))  # np.floor keeps float32 (math.floor returns an int64)
    r = r - m  # [-1/2, 1/2]
    # The scale is 2^(n-1) times 2, so n = 128 stays finite (2^127.5 ... 2^128 are finite floats) and n = 129
    # gives +inf, which is what 2^y overflows to. Below 2^-125 the result (< 3e-38) is not exact.
    # The clamp also keeps the float -> int conversion defined for huge |n|.
    n = clamp(n + m, _f32(-125.0), _f32(129.0))
    p = _f32(2.0) + r * (_E1x2 + r * (_E2x2 + r * (_E3x2 + r * (_E4x2 + r * (_E5x2 + r * (_E6x2 + r * _E7x2))))))
    return p * pow2i_f32(n - _f32(1.0))


@_njit
def log2_f32(x):
    """log2(x) for a positive normal float32 ``x``, as float64 (k + l summed there: no float32 rounding of the
    sum)."""
    k, l = _log2_parts(x)
    return np.float64(k) + np.float64(l)


@_njit
def pow_f32(x, e):
    """x^e for a positive float32 ``x`` (the gamma filter floors its input at 0.001) and float32 ``e``."""
    k, l = _log2_parts(x)
    # e*k is formed in float64, where it is exact (24-bit times 8-bit), and its integer part split off: the
    # float32 fraction that the polynomial sees is then only as inexact as e*l (about 1 ulp), where a float32
    # e*k alone would be off by up to half an ulp of |e*k| (1e-6 relative in the result for e = 2.2, x = 8).
    ek = np.float64(e) * np.float64(k)
    n = np.floor(ek + 0.5)
    y = _exp2_split(np.float32(n), np.float32(ek - n) + e * l)
    return y if x <= _FMAX else x  # inf^e = inf (e > 0) and NaN stays NaN


# Inlined by numba: LLVM would inline this call only after trying to vectorise the loop around it.
@numba.njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def cos_pi(x):
    """cos(pi x) for float32 ``x`` in [0, 1]: within 1 ulp of the correctly rounded value near 0 and 1, within
    2e-7 elsewhere.

    Evaluated as an even polynomial around the nearer end (0 or 1), so that near x = 0 the result is
    1 - (pi x)^2 / 2 + ... rounded once, as a correctly rounded cosf gives it. The contrast filter's
    0.5 - 0.5 cos(pi L) cancels there, and matching the torch filter's float32 cos value is what keeps the
    two in agreement for dark pixels."""
    far = x > _f32(0.5)
    t = _f32(1.0) - x if far else x  # [0, 1/2]; 1 - x is exact for x >= 1/2
    z2 = (_PI * t) * (_PI * t)
    c = _f32(1.0) + z2 * (_C2 + z2 * (_C4 + z2 * (_C6 + z2 * (_C8 + z2 * (_C10 + z2 * (_C12 + z2 * _C14))))))
    return -c if far else c
