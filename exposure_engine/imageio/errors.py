"""Errors and limits shared by the readers and the writer.

Every failure to read a photo surfaces as :class:`ImageReadError` (a ``ValueError``) whose message names the file
and the reason, whatever library raised underneath (Pillow, rawpy/LibRaw, tifffile, OpenCV): a batch or a daemon
catches one type and carries on with the next file.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Default ceiling on width x height, checked from the file header before any pixel is decoded.
#: 300 MP covers every camera sold today (the largest sensors are ~150-200 MP) with room for panoramas,
#: and stops decompression bombs (a 100 kB PNG can claim 10^10 pixels = 120 GB as float32).
DEFAULT_MAX_PIXELS = 300_000_000

#: Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` for a whole process (e.g. the daemon).
MAX_PIXELS_ENV = "EXPOSURE_ENGINE_MAX_PIXELS"


class ImageReadError(ValueError):
    """A photo that cannot be read. ``path`` is the file, ``reason`` a short human explanation."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageWriteError(ValueError):
    """A photo that cannot be written (bad extension or bit depth, unwritable folder, full disk...)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageWarning(UserWarning):
    """Something was read but not exactly as stored (alpha dropped, ICC profile ignored...)."""


def resolve_max_pixels(max_pixels: int | None) -> int:
    """``max_pixels`` if given, else ``$EXPOSURE_ENGINE_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if max_pixels is not None:
        if int(max_pixels) <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r} is not a number") from None
        if value > 0:
            return value
    return DEFAULT_MAX_PIXELS


def check_dimensions(path: str | os.PathLike, width: int, height: int, max_pixels: int) -> None:
    """Refuse empty or absurd sizes from a header before anything is decoded."""
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"the header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageReadError(
            path, f"the header declares {width}x{height} = {width * height / 1e6:.0f} MP, over the limit of "
                  f"{max_pixels / 1e6:.0f} MP (a corrupt file or a decompression bomb; raise the limit with "
                  f"max_pixels= or ${MAX_PIXELS_ENV} if the photo is genuine)")


def check_readable_file(path: str | os.PathLike) -> Path:
    """The checks every reader shares: the path exists, is a regular file and is not empty."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot access the file ({e.strerror or e})") from None
    if p.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if not p.is_file():
        raise ImageReadError(path, "is not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise ImageReadError(path, "permission denied")
    return p
