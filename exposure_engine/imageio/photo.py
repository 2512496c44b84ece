"""The :class:`Photo` a reader returns (pixels plus what a writer needs to carry on), orientation and EXIF."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_MAKER_NOTE = 0x927C
_IFD_POINTERS = (_EXIF_IFD, 0x8825)   # Exif and GPS sub-directories
# TIFF structure tags that describe the *source* file's pixel layout (a CR2's thumbnail strips, a DNG's tiles):
# meaningless, even harmful, in the EXIF of a different file.
_STRUCTURE_TAGS = (0x00FE, 0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x0117, 0x011C,
                   0x0118, 0x0119, 0x013D, 0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x014A, 0x0152, 0x0153,
                   0x0201, 0x0202, 0x02BC, 0x8773)
_DNG_TAGS = range(0xC612, 0xD000)   # DNGVersion, ColorMatrix1, AsShotNeutral... describe the raw data only
# Largest EXIF block that fits one JPEG APP1 segment (64 KiB minus the length field).
JPEG_EXIF_MAX = 65533


@dataclass
class Photo:
    """A decoded photo.

    pixels: ``(H, W, 3)`` float32 linear-light RGB with sRGB primaries, orientation applied; integer sources
        lie in [0, 1], float sources may exceed 1.
    kind: ``"raw"`` (developed by LibRaw) or ``"raster"`` (PNG, JPEG, TIFF, ...).
    format: the container as detected (``"JPEG"``, ``"PNG"``, ``"TIFF"``, ``"CR2"``, ``"DNG"``...).
    bits: bits per sample in the file (8, 16, 32; 12/14 for RAW sensors report 16, the developed depth).
    exif: EXIF block (``b"Exif\\0\\0"`` + TIFF) to copy into the output, orientation already reset to 1, or None.
    icc: the source's embedded ICC profile (already applied to ``pixels``), or None.
    warnings: what was not read exactly as stored (alpha dropped, profile ignored...), one sentence each.
    """

    pixels: np.ndarray
    path: Path
    kind: str
    format: str
    bits: int
    exif: bytes | None = None
    icc: bytes | None = None
    orientation: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` after orientation."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``(H, W, ...)`` pixels stored with EXIF ``orientation`` (1-8) upright, as Pillow's exif_transpose."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = a.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        a = a.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        a = a.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(a)


def clean_exif(exif, *, drop_maker_note: bool = False) -> bytes | None:
    """A PIL ``Image.Exif`` -> bytes fit for an output file: orientation 1 (pixels are already upright), the source
    file's layout tags removed. None when nothing is left."""
    from PIL import Image

    out = Image.Exif()
    for k, v in exif.items():
        if k in _STRUCTURE_TAGS or k in _DNG_TAGS:
            continue
        if k in _IFD_POINTERS:
            try:
                sub = dict(exif.get_ifd(k))
            except Exception:   # a malformed sub-IFD: keep the rest
                continue
            if k == _EXIF_IFD and drop_maker_note:
                sub.pop(_MAKER_NOTE, None)
            sub.pop(0xA005, None)   # interoperability pointer: an offset into the source file
            if sub:
                out[k] = sub
        else:
            out[k] = v
    if not out:
        return None
    out[EXIF_ORIENTATION] = 1
    data = out.tobytes()
    return data if data.startswith(b"Exif\0\0") else b"Exif\0\0" + data


def exif_from_bytes(data: bytes):
    """Parse an EXIF block (with or without the ``Exif\\0\\0`` header) into a PIL ``Image.Exif``."""
    from PIL import Image

    exif = Image.Exif()
    exif.load(data if data.startswith(b"Exif\0\0") else b"Exif\0\0" + data)
    return exif
