"""The sRGB transfer curve (IEC 61966-2-1), exact piecewise form, and integer -> float helpers.

Decoding 8-bit values with a plain 2.2 power (as the paper's reference code did) darkens the shadows: code 16
decodes to the light that sRGB assigns to code 7.5 (8.5 codes off), code 10 to 27% of its light. The
piecewise curve is linear below 0.04045.
"""
from __future__ import annotations

import numpy as np

_A = 0.055
_THRESH_ENC = 0.04045          # encoded value where the linear segment ends
_THRESH_LIN = 0.0031308        # linear value where the linear segment ends


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (any shape, float) -> linear light, float32. Negative inputs map to 0."""
    v = np.clip(np.asarray(v, np.float64), 0.0, None)
    out = np.where(v <= _THRESH_ENC, v / 12.92, ((v + _A) / (1 + _A)) ** 2.4)
    return out.astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear light (any shape, float) -> sRGB-encoded values, float32. Negative inputs map to 0."""
    v = np.clip(np.asarray(v, np.float64), 0.0, None)
    out = np.where(v <= _THRESH_LIN, v * 12.92, (1 + _A) * v ** (1 / 2.4) - _A)
    return out.astype(np.float32)


def integer_scale(dtype: np.dtype) -> float:
    """The value that means 1.0 for an unsigned integer sample type (255, 65535, ...)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return 1.0
    if dtype.kind != "u":
        raise TypeError(f"not an unsigned integer sample type: {dtype}")
    return float(np.iinfo(dtype).max)


def decode_integer(a: np.ndarray, curve) -> np.ndarray:
    """Integer samples -> float32 through ``curve`` (a function of normalised values), via a lookup table.

    A table of 256 or 65536 entries makes decoding one gather per sample, exact to float32 for every code value.
    """
    scale = integer_scale(a.dtype)
    if a.dtype.itemsize <= 2:
        lut = np.asarray(curve(np.arange(int(scale) + 1, dtype=np.float64) / scale), np.float32)
        return lut[a]
    return np.asarray(curve(a.astype(np.float64) / scale), np.float32)
