"""One entry point for every photo: RAW by extension (or when no raster decoder recognises the file)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import ImageReadError, ImageWarning
from .photo import Photo
from .raster import ENCODINGS, load_raster
from .raw import is_raw_path, load_raw


def load_photo(path: str | Path, *, input_encoding: str = "auto", max_pixels: int | None = None,
               half_size: bool = False, proxy_size: int | None = None) -> Photo:
    """Decode any supported photo to a :class:`Photo` with linear float32 ``(H, W, 3)`` pixels.

    input_encoding: ``"auto"`` (ICC profile if embedded, else sRGB for integer samples and linear for float),
        ``"srgb"`` or ``"linear"`` (ignore any profile). RAW files are always linear.
    max_pixels: refuse images whose header declares more pixels (default 300 MP, or $EXPOSURE_ENGINE_MAX_PIXELS).
    half_size / proxy_size: let RAW and large JPEG/PNG decoders skip detail (for proxies only).
    Raises :class:`ImageReadError` (a ValueError) naming the file and the reason.
    """
    if input_encoding not in ENCODINGS:
        raise ValueError(f"input_encoding must be one of {ENCODINGS}, not {input_encoding!r}")
    if is_raw_path(path):
        return load_raw(path, half_size=half_size, max_pixels=max_pixels)
    try:
        return load_raster(path, input_encoding=input_encoding, max_pixels=max_pixels, proxy_size=proxy_size)
    except ImageReadError as e:
        if not (e.reason.startswith("not an image file") or e.reason.startswith("unreadable TIFF")):
            raise
        # An unknown extension (or none): LibRaw may still recognise a camera format by its contents (most RAW
        # formats are TIFF-based, so a TIFF that no raster decoder understands is worth a try too).
        try:
            return load_raw(path, half_size=half_size, max_pixels=max_pixels)
        except ImageReadError:
            raise e from None


def load_image(path: str | Path, input_encoding: str = "auto", *, max_pixels: int | None = None) -> np.ndarray:
    """Pixels only: linear float32 ``(H, W, 3)``. Anything not read exactly as stored becomes an
    :class:`ImageWarning` (use :func:`load_photo` to get the notes as a list, and the EXIF/ICC metadata)."""
    photo = load_photo(path, input_encoding=input_encoding, max_pixels=max_pixels)
    for note in photo.warnings:
        warnings.warn(f"{photo.path}: {note}", ImageWarning, stacklevel=2)
    return photo.pixels
