"""Synthetic test images and a DNG writer, shared by the test modules (no files from outside the repository).

``write_test_dng`` makes a real camera-RAW file: a 16-bit uncompressed RGGB Bayer mosaic with BlackLevel,
WhiteLevel, ColorMatrix1 and AsShotNeutral (pidng), whose LibRaw development is known in closed form:
with ColorMatrix1 = C @ XYZ_TO_SRGB ("camera" primaries = C applied to sRGB) and AsShotNeutral = n, a linear
sRGB colour x is stored as black + (white - black) * n * (C @ x), and rawpy's camera-WB development gives x back.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# XYZ (D65) -> linear sRGB (IEC 61966-2-1).
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                        [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])

# A plausible camera: each channel sees some of the others (rows sum to 1 so white stays white).
CAMERA_FROM_SRGB = np.array([[0.80, 0.15, 0.05],
                             [0.10, 0.80, 0.10],
                             [0.02, 0.18, 0.80]])


def patches(colours: list[tuple[float, float, float]], patch: int = 32, cols: int = 4) -> np.ndarray:
    """Flat colour patches on a grid: ``(rows*patch, cols*patch, 3)`` float32 linear."""
    rows = -(-len(colours) // cols)
    img = np.zeros((rows * patch, cols * patch, 3), np.float32)
    for i, c in enumerate(colours):
        r, k = divmod(i, cols)
        img[r * patch:(r + 1) * patch, k * patch:(k + 1) * patch] = c
    return img


def smooth_image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A photo-like linear image ``(h, w, 3)`` float32 in [0.002, 0.95]: gradients, a disc, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 7.0) * np.cos(y / 9.0)], -1)
    disc = ((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2) < (min(h, w) * 0.2) ** 2
    img[disc] = (0.9, 0.3, 0.1)
    img = img ** 2.0 + rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0.002, 0.95).astype(np.float32)


def _rational(v: float, den: int = 10000) -> list[int]:
    f = Fraction(float(v)).limit_denominator(den)
    return [f.numerator, f.denominator]


def mosaic_rggb(camera_rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W)`` RGGB Bayer samples (H, W even)."""
    h, w, _ = camera_rgb.shape
    cfa = np.empty((h, w), camera_rgb.dtype)
    cfa[0::2, 0::2] = camera_rgb[0::2, 0::2, 0]
    cfa[0::2, 1::2] = camera_rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2] = camera_rgb[1::2, 0::2, 1]
    cfa[1::2, 1::2] = camera_rgb[1::2, 1::2, 2]
    return cfa


def write_test_dng(path: str | Path, linear_srgb: np.ndarray, *, neutral=(0.5, 1.0, 0.7),
                   camera_from_srgb: np.ndarray = CAMERA_FROM_SRGB, black: int = 512, white: int = 16383,
                   orientation: int = 1, make: str = "ExposureEngine", model: str = "Test Camera") -> Path:
    """Write ``linear_srgb`` ``(H, W, 3)`` (H, W even and >= 22: LibRaw refuses smaller frames; values in
    [0, 1]) as a Bayer DNG that rawpy develops back.

    neutral: AsShotNeutral (the camera's response to white, green = 1); LibRaw's camera WB divides it out.
    orientation: TIFF/EXIF orientation tag (6 = the camera was turned 90 degrees clockwise).
    Follows the recipe in the project notes: 16-bit container, uncompressed, DNGVersion left to pidng.
    """
    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, CFAPattern, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    img = np.asarray(linear_srgb, np.float64)
    h, w, _ = img.shape
    if h % 2 or w % 2:
        raise ValueError("the mosaic needs even dimensions")
    cam = np.einsum("ij,hwj->hwi", camera_from_srgb, img) * np.asarray(neutral)[None, None, :]
    cfa = mosaic_rggb(np.clip(black + (white - black) * cam, 0, white))
    cfa = np.round(cfa).astype(np.uint16)
    colour_matrix = camera_from_srgb @ XYZ_TO_SRGB   # XYZ -> camera, what DNG's ColorMatrix1 holds

    t = DNGTags()
    t.set(Tag.ImageWidth, w)
    t.set(Tag.ImageLength, h)
    t.set(Tag.TileWidth, w)
    t.set(Tag.TileLength, h)
    t.set(Tag.Orientation, orientation)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, CFAPattern.RGGB)
    t.set(Tag.BlackLevel, black)
    t.set(Tag.WhiteLevel, white)
    t.set(Tag.ColorMatrix1, [_rational(v) for v in colour_matrix.ravel()])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [_rational(v) for v in neutral])
    t.set(Tag.BaselineExposure, [[0, 100]])
    t.set(Tag.Make, make)
    t.set(Tag.Model, model)
    t.set(Tag.UniqueCameraModel, f"{make} {model}")
    conv = RAW2DNG()
    conv.options(t, path="", compress=False)
    data = conv.convert(cfa)   # without a filename pidng returns the bytes
    path = Path(path)
    path.write_bytes(bytes(data))
    return path


def png_header_claiming(width: int, height: int) -> bytes:
    """A syntactically valid PNG start (signature + IHDR with a correct CRC) declaring a huge size, and one
    tiny IDAT: what a decompression bomb looks like to a reader that trusts headers."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def linear_srgb_icc_profile() -> bytes:
    """An ICC profile with sRGB primaries and a gamma-1.0 tone curve (what linear TIFF exporters embed)."""
    return matrix_trc_profile(SRGB_D50_COLUMNS, gamma=1.0, description="Linear sRGB (test)")


def adobe_rgb_icc_profile() -> bytes:
    """An Adobe RGB (1998)-like matrix/TRC profile: wider primaries, gamma 563/256."""
    return matrix_trc_profile(ADOBE_D50_COLUMNS, gamma=563 / 256, description="Adobe RGB-like (test)")


# Colorants (columns = XYZ D50 of R, G, B at full intensity), Bradford-adapted, as in the public profiles.
SRGB_D50_COLUMNS = np.array([[0.4360747, 0.3850649, 0.1430804],
                             [0.2225045, 0.7168786, 0.0606169],
                             [0.0139322, 0.0971045, 0.7141733]])
ADOBE_D50_COLUMNS = np.array([[0.6097559, 0.2052401, 0.1492240],
                              [0.3111242, 0.6256560, 0.0632197],
                              [0.0194811, 0.0608902, 0.7448387]])


def matrix_trc_profile(columns: np.ndarray, gamma: float, description: str) -> bytes:
    """Build a minimal ICC v2 RGB display profile (rXYZ/gXYZ/bXYZ, one gamma curve, wtpt, desc) byte by byte,
    so that tests do not depend on profile files; littlecms reads it (tests check that)."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"
    desc_text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 12 + b"\0" * 67
    tags = [(b"desc", desc), (b"wtpt", xyz([0.9642, 1.0, 0.8249])), (b"rXYZ", xyz(columns[:, 0])),
            (b"gXYZ", xyz(columns[:, 1])), (b"bXYZ", xyz(columns[:, 2])), (b"rTRC", curv), (b"gTRC", curv),
            (b"bTRC", curv), (b"cprt", b"text\0\0\0\0public domain\0")]
    table = struct.pack(">I", len(tags))
    offset = 128 + 4 + 12 * len(tags)
    body = b""
    for sig, data in tags:
        while (offset + len(body)) % 4:
            body += b"\0"
        table += struct.pack(">4sII", sig, offset + len(body), len(data))
        body += data
    size = 128 + len(table) + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + b"\0" * 12 + \
        b"acsp" + b"APPL" + struct.pack(">I", 0) + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0) + \
        s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    assert len(header) == 128, len(header)
    return header + table + body
