"""Camera RAW files (anything LibRaw reads: CR2/CR3, NEF, ARW, DNG, RAF, ORF, RW2...) developed by rawpy.

Development is deliberately neutral so that the agent, not the decoder, makes the look: camera white balance,
sRGB primaries, linear (gamma 1), no auto-brightening, 16 bits, AHD demosaicing (LibRaw's default). The camera's
orientation *is* applied (``user_flip`` left to the file), for the full image and the ``half_size`` proxy alike,
so a portrait shot comes out upright everywhere, as in every other viewer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ImageReadError, check_dimensions, check_readable_file, resolve_max_pixels
from .photo import Photo, clean_exif

#: File extensions treated as camera RAW (lower case, with the dot). Others go to the raster readers first.
RAW_EXTENSIONS = frozenset(
    ".3fr .ari .arw .bay .cap .cr2 .cr3 .crw .dcr .dcs .dng .drf .eip .erf .fff .iiq .k25 .kdc .mdc .mef .mos "
    ".mrw .nef .nrw .orf .pef .ptx .pxn .r3d .raf .raw .rw2 .rwl .rwz .sr2 .srf .srw .x3f".split())

# LibRaw's flip code -> the EXIF orientation it corresponds to (recorded in Photo.orientation).
_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}
# Make, Model, DateTime, Artist, Copyright: copied from IFD0 when Pillow cannot parse the file.
_DESCRIPTIVE_TAGS = (271, 272, 306, 315, 33432)


def is_raw_path(path: str | Path) -> bool:
    """True when the extension names a camera RAW format."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def _libraw_reason(e: Exception) -> str:
    import rawpy

    msg = e.args[0] if e.args else ""
    msg = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    if isinstance(e, rawpy.LibRawFileUnsupportedError):
        return f"not a RAW file LibRaw can read ({msg})"
    if isinstance(e, rawpy.LibRawIOError):
        return f"truncated or unreadable RAW data ({msg})"
    if isinstance(e, rawpy.LibRawDataError):
        return f"corrupt RAW data ({msg})"
    if isinstance(e, (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError)):
        return f"RAW image too large to decode ({msg})"
    return f"LibRaw failed: {type(e).__name__} ({msg})"


def postprocess_args(half_size: bool = False) -> dict:
    """The rawpy ``postprocess`` settings (see the module docstring).

    ``adjust_maximum_thr=0`` turns off LibRaw's content-dependent white point (by default, when the brightest
    sample exceeds 75% of the white level, that sample becomes white): with it, a frame with bright highlights
    would be brightened by up to 1.33x, and the half-size proxy (whose maximum differs) by a different factor.
    """
    import rawpy

    return dict(use_camera_wb=True, no_auto_bright=True, gamma=(1, 1), output_bps=16,
                output_color=rawpy.ColorSpace.sRGB, half_size=half_size, adjust_maximum_thr=0.0)


def load_raw(path: str | Path, *, half_size: bool = False, max_pixels: int | None = None) -> Photo:
    """Develop a RAW file to linear float32 ``(H, W, 3)`` in [0, 1], sRGB primaries, camera white balance.

    half_size: LibRaw's 2x2 binning instead of demosaicing (4x fewer pixels, ~8x faster): for proxies.
    Raises :class:`ImageReadError` naming the file and the reason for anything LibRaw cannot develop.
    """
    import rawpy

    p = check_readable_file(path)
    limit = resolve_max_pixels(max_pixels)
    raw = rawpy.RawPy()
    try:
        try:
            raw.open_file(str(p))
            sizes = raw.sizes   # header only: nothing decoded yet
            check_dimensions(p, int(sizes.width), int(sizes.height), limit)
            raw.unpack()
            rgb = raw.postprocess(**postprocess_args(half_size))
        except rawpy.LibRawError as e:
            raise ImageReadError(p, _libraw_reason(e)) from None
        except MemoryError:
            raise ImageReadError(p, "not enough memory to develop the RAW file") from None
        flip = int(sizes.flip)
    finally:
        raw.close()
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageReadError(p, f"LibRaw developed an unusable image of shape {rgb.shape}")
    pixels = rgb.astype(np.float32)
    pixels *= np.float32(1 / 65535)
    notes: list[str] = []
    return Photo(pixels, p, "raw", p.suffix.lstrip(".").upper() or "RAW", 16, exif=_raw_exif(p, notes),
                 icc=None, orientation=_FLIP_TO_EXIF.get(flip, 1), warnings=notes)


def _raw_exif(path: Path, notes: list[str]) -> bytes | None:
    """Camera EXIF (make, model, exposure, lens, date) from TIFF-based RAWs (CR2, NEF, ARW, DNG, ...) via Pillow's
    header parser; the MakerNote is dropped (tens of kB of vendor data that breaks JPEG's 64 kB EXIF limit)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            return clean_exif(exif, drop_maker_note=True) if len(exif) else None
    except Exception:   # Pillow refuses some TIFF layouts (a DNG's CFA data): try tifffile's header parser
        pass
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            tags = tf.pages.first.tags
            exif = Image.Exif()
            for code in _DESCRIPTIVE_TAGS:
                if code in tags and isinstance(tags[code].value, str) and tags[code].value.strip("\0 "):
                    exif[code] = tags[code].value
            return clean_exif(exif) if len(exif) else None
    except Exception:   # not TIFF-based (CR3, RAF, X3F...) or unparseable: no EXIF to carry, not an error
        return None
