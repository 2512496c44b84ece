"""Photo input/output: camera RAW (rawpy/LibRaw), PNG/JPEG/TIFF and friends, proxies, and result writing.

Everything read comes back as linear-light float32 ``(H, W, 3)`` RGB with sRGB primaries, upright; everything
written is display-encoded sRGB. docs/io.md describes formats, colour handling, limits and errors.
"""
from __future__ import annotations

from .errors import (DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageReadError, ImageWarning, ImageWriteError,
                     resolve_max_pixels)
from .load import load_image, load_photo
from .photo import Photo, apply_orientation
from .proxy import load_proxy, make_proxy
from .raster import ENCODINGS, load_raster
from .raw import RAW_EXTENSIONS, is_raw_path, load_raw
from .transfer import linear_to_srgb, srgb_to_linear
from .write import FORMATS, encode_image, output_format, save_image

__all__ = [
    "DEFAULT_MAX_PIXELS", "ENCODINGS", "FORMATS", "MAX_PIXELS_ENV", "RAW_EXTENSIONS", "ImageReadError",
    "ImageWarning", "ImageWriteError", "Photo", "apply_orientation", "encode_image", "is_raw_path", "linear_to_srgb",
    "load_image", "load_photo", "load_proxy", "load_raster", "load_raw", "make_proxy", "output_format",
    "resolve_max_pixels", "save_image", "srgb_to_linear",
]
