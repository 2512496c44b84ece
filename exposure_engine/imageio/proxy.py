"""Proxies: the whole frame area-averaged to a small square of linear values, as the paper's agent sees it.

The agent decides its edits on a 64x64 proxy (cv2.INTER_AREA of the entire frame, aspect ratio not kept); larger
proxies (256, 512) serve the daemon's and plug-ins' previews. :func:`load_proxy` avoids decoding what the proxy
does not need: LibRaw's ``half_size`` for RAW (no demosaicing), JPEG DCT scaling and Pillow ``reduce`` for large
8-bit rasters (both keep at least 4x the proxy's resolution).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageWarning
from .load import load_photo


STATE_SIZE = 64  # the side of the policy's proxy states (the networks area-reduce them to arch.proxy themselves)


def resize_proxy(image: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, 3)`` linear float image -> ``(size, size, 3)`` float32 by area averaging (INTER_AREA).

    Raises ValueError naming the problem for a wrong shape, an integer image or non-finite pixels."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"proxy must be an (h, w, 3) array, got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype.kind != "f":
        raise ValueError(f"proxy must hold linear float pixels, got {image.dtype} (decode with exposure_engine.imageio)")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"proxy is empty: {image.shape}")
    x = np.asarray(image, np.float32)
    if x.shape[:2] == (size, size):
        small = np.ascontiguousarray(x)
    else:
        small = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)
    # Checked on the small result when it is a reduction (every input pixel then weighs in an area average, so an
    # inf or NaN poisons it; 16x fewer values for the daemon's 256 px proxies), with the exact reason from the
    # input when it fails.
    if not np.isfinite(small if min(x.shape[:2]) >= size else x).all():
        if not np.isfinite(x).all():
            raise ValueError("proxy has NaN or infinite pixels")
        raise ValueError("proxy pixel values are too large (their average overflows float32)")
    return small


def make_proxy(linear: np.ndarray, size: int = 64) -> np.ndarray:
    """``(H, W, 3)`` linear float -> ``(size, size, 3)`` float32 by area averaging of linear light."""
    if not isinstance(linear, np.ndarray) or linear.ndim != 3 or linear.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got {getattr(linear, 'shape', type(linear).__name__)}")
    if size < 1:
        raise ValueError(f"proxy size must be positive, got {size}")
    src = np.ascontiguousarray(linear, np.float32)
    return cv2.resize(src, (size, size), interpolation=cv2.INTER_AREA)


def load_proxy(path: str | Path, size: int = 64, input_encoding: str = "auto", *,
               max_pixels: int | None = None, exact: bool = False) -> np.ndarray:
    """Decode ``path`` just enough for a ``(size, size, 3)`` float32 linear proxy.

    exact: decode at full resolution (the proxy then equals ``make_proxy(load_image(path), size)`` exactly;
        the fast paths differ from it by under 0.001 on average, see docs/io.md).
    Notes about the decode (alpha dropped, profile ignored...) are issued as :class:`ImageWarning`.
    """
    photo = load_photo(path, input_encoding=input_encoding, max_pixels=max_pixels,
                       half_size=not exact, proxy_size=None if exact else size)
    for note in photo.warnings:
        warnings.warn(f"{photo.path}: {note}", ImageWarning, stacklevel=2)
    return make_proxy(photo.pixels, size)
