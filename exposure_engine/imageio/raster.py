"""PNG, JPEG, TIFF (8/16-bit integer, float) and anything else Pillow reads, decoded to linear light.

Decoders: Pillow for 8-bit data and every header; OpenCV for 16-bit RGB PNG (Pillow truncates it to 8 bits);
tifffile for TIFF (16-bit RGB, float, planar, multi-sample). Colour: the embedded ICC profile when there is one
(exact float maths for matrix/TRC profiles, littlecms otherwise), else the exact sRGB curve for integer data and
linear for float data. Orientation, alpha, palettes and greyscale are normalised to upright ``(H, W, 3)`` RGB.
"""
from __future__ import annotations

import io
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np

from . import icc as _icc
from .errors import ImageReadError, check_dimensions, check_readable_file, resolve_max_pixels
from .photo import EXIF_ORIENTATION, Photo, apply_orientation, clean_exif
from .transfer import decode_integer, srgb_to_linear_exact

ENCODINGS = ("auto", "srgb", "linear")
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
# Pillow's own bomb check reads a process-wide global; it is switched off only while a header is parsed.
_PIL_LIMIT_LOCK = threading.Lock()
# Fast proxy decoding keeps at least this many decoded pixels per proxy pixel along each axis (see _pillow_pixels).
PROXY_OVERSAMPLE = 4


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for truncated or corrupt data (it has no single exception type)."""
    import struct

    from PIL import Image
    return (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error, zlib.error,
            Image.DecompressionBombError)


def _open_pillow(path: Path, max_pixels: int, notes: list[str]):
    """Open (header only) with Pillow, its bomb check aligned with ours, every failure as ImageReadError and
    its warnings (corrupt EXIF...) as notes."""
    from PIL import Image, UnidentifiedImageError

    with _PIL_LIMIT_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None   # off while the header is parsed: our own check below gives the message
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            raise ImageReadError(path, "not an image file (no decoder recognises its contents)") from None
        except Image.DecompressionBombError as e:
            raise ImageReadError(path, f"refused as a decompression bomb ({e})") from None
        except _decode_errors() as e:
            raise ImageReadError(path, f"corrupt or unreadable image header ({type(e).__name__}: {e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    _pillow_warnings_to_notes(caught, notes, "metadata partly unreadable")
    try:
        check_dimensions(path, im.width, im.height, max_pixels)
    except ImageReadError:
        im.close()
        raise
    return im


def _pillow_warnings_to_notes(caught: list, notes: list[str], what: str) -> None:
    """Pillow's own warnings (corrupt EXIF...) become notes; anything else caught meanwhile (a ResourceWarning
    from an unrelated object collected at that moment) is passed on untouched."""
    import PIL
    from PIL import Image

    pil_dir = str(Path(PIL.__file__).parent)
    for w in caught:
        if str(w.filename).startswith(pil_dir) and not issubclass(w.category, Image.DecompressionBombWarning):
            notes.append(f"{what} ({str(w.message).strip()})")
        elif not issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _pillow_metadata(im, path: Path, notes: list[str]) -> tuple[bytes | None, int, bytes | None]:
    """(exif bytes for output, orientation, icc bytes) from an opened Pillow image."""
    icc = im.info.get("icc_profile") or None
    try:
        with warnings.catch_warnings(record=True) as caught:   # Pillow warns about corrupt EXIF and goes on
            warnings.simplefilter("always")
            exif = im.getexif()
            orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
            exif_bytes = clean_exif(exif) if len(exif) else None
        _pillow_warnings_to_notes(caught, notes, "EXIF metadata partly unreadable")
    except Exception as e:   # malformed EXIF must not cost the pixels
        notes.append(f"EXIF metadata unreadable and dropped ({type(e).__name__}: {e})")
        orientation, exif_bytes = 1, None
    if not 1 <= orientation <= 8:
        notes.append(f"invalid EXIF orientation {orientation} ignored")
        orientation = 1
    return exif_bytes, orientation, icc


def _is_16bit_png(im) -> bool:
    try:
        return im.format == "PNG" and any(";16" in str(t.args if hasattr(t, "args") else t[3]) for t in im.tile) \
            and im.mode not in ("I", "I;16", "I;16B", "I;16L")
    except Exception:
        return False


def _pillow_pixels(im, path: Path, notes: list[str], icc: bytes | None, proxy_size: int | None
                   ) -> tuple[np.ndarray, bytes | None]:
    """Decode with Pillow. Returns the raw sample array ((H, W) or (H, W, C), uint8/uint16/float32) and the ICC
    profile still to apply (None when littlecms already converted to sRGB or there was none)."""
    if proxy_size and im.format == "JPEG":
        # DCT-domain downscaling: decode only 1/2, 1/4 or 1/8 of the samples, keeping >= 4x the proxy size so
        # the (gamma-domain) averaging inside the decoder stays at a scale much finer than one proxy pixel.
        im.draft(im.mode, (PROXY_OVERSAMPLE * proxy_size, PROXY_OVERSAMPLE * proxy_size))
    try:
        im.load()
    except _decode_errors() as e:
        raise ImageReadError(path, f"corrupt or truncated image data ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode the image") from None
    if proxy_size and im.format != "JPEG" and im.mode in ("L", "RGB", "RGBA", "LA", "P"):
        factor = min(im.width, im.height) // (PROXY_OVERSAMPLE * proxy_size)
        if factor >= 2:
            im = (im.convert("RGBA" if "transparency" in im.info else "RGB") if im.mode == "P" else im).reduce(factor)
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode == "CMYK" or mode == "LAB":
        if icc is not None and mode == "CMYK":
            try:
                from PIL import ImageCms
                im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                               ImageCms.createProfile("sRGB"), outputMode="RGB")
                return np.asarray(im), None
            except Exception as e:
                notes.append(f"CMYK ICC profile could not be applied ({e}); converted without colour management")
        else:
            notes.append(f"{mode} image converted to RGB without colour management")
        try:
            return np.asarray(im.convert("RGB")), None
        except Exception as e:
            raise ImageReadError(path, f"cannot convert {mode} pixels to RGB ({e})") from None
    if mode in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "F"):
        return np.asarray(im), icc
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), icc
    if mode == "I":
        # 32-bit integer greyscale: PNG and TIFF store at most 16 significant bits here.
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16), icc
    try:
        return np.asarray(im.convert("RGB")), icc
    except Exception as e:
        raise ImageReadError(path, f"unsupported pixel mode {mode} ({e})") from None


def _cv2_png16(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(path, np.uint8)
    a = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if a is None:
        raise ImageReadError(path, "corrupt or truncated 16-bit PNG data")
    if a.ndim == 3:   # OpenCV orders channels BGR(A)
        a = a[..., [2, 1, 0, 3][: a.shape[2]]] if a.shape[2] == 4 else a[..., 2::-1]
    return a


def _tiff_pixels(path: Path, max_pixels: int) -> tuple[np.ndarray, bytes | None, int, str]:
    """Decode the first image of a TIFF with tifffile: (samples, icc, orientation, format name)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages.first
            check_dimensions(path, int(page.imagewidth), int(page.imagelength), max_pixels)
            tags = page.tags
            icc = bytes(tags[34675].value) if 34675 in tags else None
            orientation = int(tags[274].value) if 274 in tags else 1
            photometric = int(page.photometric)
            if photometric not in (0, 1, 2, 3):   # CMYK, YCbCr, CIELab...: Pillow handles the 8-bit ones
                raise _TryPillow(f"photometric interpretation {page.photometric.name}")
            a = page.asarray()
            if page.planarconfig == 2 and a.ndim == 3 and a.shape[0] == page.samplesperpixel:
                a = np.moveaxis(a, 0, -1)
            if photometric == 3:   # palette: 16-bit colour map
                a = np.moveaxis(page.colormap[:, a], 0, -1).astype(np.uint16)
            elif photometric == 0:  # min-is-white
                a = (np.iinfo(a.dtype).max - a) if a.dtype.kind == "u" else (1.0 - a)
    except (ImageReadError, _TryPillow):
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode the image") from None
    except Exception as e:   # tifffile raises many types (TiffFileError, ValueError, struct.error...) for bad data
        raise _TryPillow(f"{type(e).__name__}: {e}") from None
    return a, icc, orientation, "TIFF"


class _TryPillow(Exception):
    """tifffile could not decode this TIFF; Pillow may (8-bit CMYK/YCbCr/JPEG-compressed)."""


def _normalise_samples(a: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """(H, W) or (H, W, C) samples -> (H, W, 1 or 3), dropping alpha and extra samples (noted)."""
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype.kind == "i":
        raise ImageReadError(path, f"signed integer samples ({a.dtype}) are not supported")
    if a.dtype.kind not in "uf":
        raise ImageReadError(path, f"unsupported sample type {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ImageReadError(path, f"unsupported sample layout {a.shape}")
    c = a.shape[2]
    if c == 2:
        notes.append("alpha channel dropped (grey + alpha image)")
        a = a[..., :1]
    elif c == 4:
        notes.append("alpha channel dropped")
        a = a[..., :3]
    elif c > 4:
        notes.append(f"{c - 3} extra samples per pixel ignored (only the first three are used as RGB)")
        a = a[..., :3]
    elif c not in (1, 3):
        raise ImageReadError(path, f"unsupported number of samples per pixel: {c}")
    return a


def _decode_float(a: np.ndarray, curve) -> np.ndarray:
    return np.asarray(curve(a.astype(np.float64)), np.float32)


def _apply_matrix(lin: np.ndarray, m: np.ndarray) -> np.ndarray:
    """lin (H, W, 3) float32 -> lin @ m.T clamped at 0, in place and in row chunks (bounded extra memory)."""
    mt = m.T.astype(np.float32)
    step = max(1, (1 << 22) // max(1, lin.shape[1] * 3))
    for r in range(0, lin.shape[0], step):
        lin[r: r + step] = np.clip(lin[r: r + step] @ mt, 0.0, None)
    return lin


def to_linear(a: np.ndarray, path: Path, icc: bytes | None, input_encoding: str, notes: list[str]) -> np.ndarray:
    """Samples (H, W, 1|3), integer or float -> linear sRGB-primaries (H, W, 3) float32."""
    if input_encoding not in ENCODINGS:
        raise ValueError(f"input_encoding must be one of {ENCODINGS}, not {input_encoding!r}")
    is_float = a.dtype.kind == "f"
    if is_float:
        bad = ~np.isfinite(a)
        if bad.any():
            notes.append(f"{int(bad.sum())} non-finite samples (NaN/inf) set to 0")
            a = np.where(bad, 0, a)

    def identity(x):
        return np.clip(x, 0.0, None)

    curves: list = []
    matrix = None
    profile = None
    if icc is not None and input_encoding == "auto":
        try:
            profile = _icc.parse_matrix_profile(icc)
        except _icc.ICCError as e:
            littlecms = _littlecms(a, icc, path, notes, str(e))
            if littlecms is not None:
                a, profile = littlecms, None
            icc = None   # converted by littlecms, or warned about: decode as sRGB below
        if profile is not None and (profile.colour_space == "GRAY") != (a.shape[2] == 1):
            notes.append(f"ICC profile '{profile.description}' is {profile.colour_space} but the image has "
                         f"{a.shape[2]} channel(s): profile ignored, decoded as sRGB")
            profile = None
    elif icc is not None:
        notes.append(f"embedded ICC profile '{_icc.profile_description(icc)}' ignored "
                     f"(input_encoding={input_encoding})")
    if profile is not None and not profile.same_as_srgb():
        curves = [profile.curves[min(c, len(profile.curves) - 1)] for c in range(a.shape[2])]
        matrix = profile.srgb_matrix()
    elif input_encoding == "linear" or (input_encoding == "auto" and is_float and profile is None):
        curves = [identity] * a.shape[2]
    else:
        curves = [srgb_to_linear_exact] * a.shape[2]

    out = np.empty(a.shape[:2] + (3,), np.float32)
    for c in range(a.shape[2]):
        src = a[..., c]
        out[..., c] = _decode_float(src, curves[c]) if is_float else decode_integer(src, curves[c])
    if a.shape[2] == 1:
        out[..., 1] = out[..., 0]
        out[..., 2] = out[..., 0]
    elif matrix is not None:
        _apply_matrix(out, matrix)
    return out


def _littlecms(a: np.ndarray, icc: bytes, path: Path, notes: list[str], why: str) -> np.ndarray | None:
    """Convert 8-bit samples to sRGB with littlecms (LUT-based profiles). None (and a note) when impossible."""
    desc = _icc.profile_description(icc)
    if a.dtype != np.uint8:
        notes.append(f"ICC profile '{desc}' not applied: {why}, and littlecms converts only 8-bit images here "
                     f"({a.dtype} samples); colours decoded as sRGB")
        return None
    try:
        from PIL import Image, ImageCms

        im = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a, "L" if a.shape[2] == 1 else "RGB")
        out = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                        ImageCms.createProfile("sRGB"), outputMode="RGB")
        return np.asarray(out)
    except Exception as e:
        notes.append(f"ICC profile '{desc}' could not be applied ({type(e).__name__}: {e}); colours decoded as sRGB")
        return None


def load_raster(path: str | Path, *, input_encoding: str = "auto", max_pixels: int | None = None,
                proxy_size: int | None = None) -> Photo:
    """Decode a raster photo to linear light. See :func:`exposure_engine.imageio.load_photo`.

    proxy_size: when set, the decoder may skip detail finer than ``4 * proxy_size`` pixels (JPEG DCT scaling,
        Pillow ``reduce``); the result is then only fit for :func:`make_proxy`.
    """
    if input_encoding not in ENCODINGS:
        raise ValueError(f"input_encoding must be one of {ENCODINGS}, not {input_encoding!r}")
    p = check_readable_file(path)
    limit = resolve_max_pixels(max_pixels)
    notes: list[str] = []
    with open(p, "rb") as f:
        magic = f.read(4)
    exif = None
    fmt = None
    a = None
    icc = None
    orientation = 1
    if magic in _TIFF_MAGIC:
        try:
            a, icc, orientation, fmt = _tiff_pixels(p, limit)
        except _TryPillow as e:
            tiff_reason = str(e)
    if a is None:
        try:
            with _open_pillow(p, limit, notes) as im:
                fmt = im.format or "unknown"
                png16 = _is_16bit_png(im)   # before the metadata: reading a PNG's EXIF loads it, clearing tiles
                exif, orientation, icc = _pillow_metadata(im, p, notes)
                if png16:
                    a = _cv2_png16(p)
                else:
                    a, icc = _pillow_pixels(im, p, notes, icc, proxy_size)
        except ImageReadError as e:
            if magic in _TIFF_MAGIC and "declares" not in e.reason:
                raise ImageReadError(p, f"unreadable TIFF (tifffile: {tiff_reason}; Pillow: {e.reason})") from None
            raise
    else:
        exif = _tiff_exif(p)
    if not 1 <= orientation <= 8:
        orientation = 1
    bits = 8 * a.dtype.itemsize if a.dtype != np.bool_ else 1
    a = _normalise_samples(a, p, notes)
    a = apply_orientation(a, orientation)
    pixels = to_linear(a, p, icc, input_encoding, notes)
    return Photo(pixels, p, "raster", fmt, bits, exif=exif, icc=icc, orientation=orientation, warnings=notes)


def _tiff_exif(path: Path) -> bytes | None:
    """EXIF of a TIFF that tifffile decoded, through Pillow's header parser when it understands the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            return clean_exif(exif) if len(exif) else None
    except Exception:   # Pillow cannot parse float/planar TIFFs: no EXIF copied then
        return None
