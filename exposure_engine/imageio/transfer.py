"""The sRGB transfer curve (IEC 61966-2-1), exact piecewise form, and integer -> float helpers.

Decoding 8-bit values with a plain 2.2 power (as the paper's reference code did) darkens the shadows: code 16
decodes to the light that sRGB assigns to code 7.5 (8.5 codes off), code 10 to 27% of its light. The
piecewise curve is linear below 0.04045.

Every sRGB decode and encode in the project goes through the functions here, but for two copies of the decoding
that read the constants below: a differentiable one (torch, training/anchor.py) and a compiled one for the level
rule's searches (numba, ``agent.level.display_luminance``; tests/test_level.py holds it to this one).
"""
from __future__ import annotations

import numpy as np

SRGB_A = 0.055
SRGB_SLOPE = 12.92             # slope of the linear segment
SRGB_GAMMA = 2.4
DECODE_KNEE = 0.04045          # encoded value where the linear segment ends
ENCODE_KNEE = 0.0031308        # linear value where the linear segment ends


def srgb_to_linear(v: np.ndarray, dtype=np.float32) -> np.ndarray:
    """sRGB-encoded values (any shape) -> linear light, computed in ``dtype`` (float32: half float64's time, within
    2.4e-7). Negative inputs map to 0; values over 1 (extended-range float files) follow the curve on."""
    v = np.clip(np.asarray(v, dtype), 0.0, None)
    out = np.where(v <= DECODE_KNEE, v / SRGB_SLOPE, ((v + SRGB_A) / (1 + SRGB_A)) ** SRGB_GAMMA)
    return out.astype(dtype, copy=False)


def linear_to_srgb(v: np.ndarray, dtype=np.float32, *, clip: bool = False) -> np.ndarray:
    """Linear light (any shape) -> sRGB-encoded values, computed in ``dtype``. Negative inputs map to 0;
    ``clip=True`` also clips at 1, as a display does (otherwise light over 1 encodes to values over 1)."""
    v = np.clip(np.asarray(v, dtype), 0.0, 1.0 if clip else None)
    out = np.where(v <= ENCODE_KNEE, v * SRGB_SLOPE, (1 + SRGB_A) * v ** (1 / SRGB_GAMMA) - SRGB_A)
    return out.astype(dtype, copy=False)


def integer_scale(dtype: np.dtype) -> float:
    """The value that means 1.0 for an unsigned integer sample type (255, 65535, ...)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return 1.0
    if dtype.kind != "u":
        raise TypeError(f"not an unsigned integer sample type: {dtype}")
    return float(np.iinfo(dtype).max)


def srgb_to_linear_exact(v: np.ndarray) -> np.ndarray:
    """:func:`srgb_to_linear` computed in float64, returned as float32: for decoding files, once per code value."""
    return srgb_to_linear(v, np.float64).astype(np.float32)


def decode_integer(a: np.ndarray, curve) -> np.ndarray:
    """Integer samples -> float32 through ``curve`` (a function of normalised float64 values), via a lookup table.

    A table of 256 or 65536 entries makes decoding one gather per sample, exact to float32 for every code value.
    """
    scale = integer_scale(a.dtype)
    if a.dtype.itemsize <= 2:
        lut = np.asarray(curve(np.arange(int(scale) + 1, dtype=np.float64) / scale), np.float32)
        return lut[a]
    return np.asarray(curve(a.astype(np.float64) / scale), np.float32)
