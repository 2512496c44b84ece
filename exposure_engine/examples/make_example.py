"""How ``great-wall.tif`` was made (kept for reproducibility; not used at run time).

    python -m exposure_engine.examples.make_example SOURCE.jpg exposure_engine/examples/great-wall.tif

SOURCE is "Great Wall of China July 2006" by Nicolas Perrault III (CC0 1.0; see CREDITS.txt), 1024 px JPEG.
The photo is "unprocessed" into what a camera RAW developed linearly looks like (Brooks et al., CVPR 2019):
sRGB curve inverted, the global smoothstep tone curve inverted, a mild white-balance cast (R x0.85, B x1.12)
and -1.5 EV (the paper's input exposure), then area-downscaled to 512 px on the long edge and stored as a
16-bit TIFF tagged with a linear-sRGB ICC profile, so that any colour-managed reader (this engine included)
decodes it as linear light.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

LONG_EDGE = 512
EV = -1.5
GAINS = (0.85, 1.0, 1.12)


def _tag_xyz(x: float, y: float, z: float) -> bytes:
    s15 = lambda v: struct.pack(">i", int(round(v * 65536)))
    return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)


def linear_srgb_icc() -> bytes:
    """An ICC v2 matrix/TRC display profile: littlecms's sRGB colorants with gamma-1.0 tone curves."""
    from exposure_engine.imageio.icc import parse_matrix_profile, srgb_profile_bytes

    to_xyz = parse_matrix_profile(srgb_profile_bytes()).to_xyz  # columns: R, G, B colorants (D50)
    text = b"Linear sRGB (exposure-engine example)"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, 256) + b"\0\0"  # one entry: gamma 1.0 (u8Fixed8)
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0CC0 1.0\0"), (b"wtpt", _tag_xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _tag_xyz(*to_xyz[:, 0])), (b"gXYZ", _tag_xyz(*to_xyz[:, 1])), (b"bXYZ", _tag_xyz(*to_xyz[:, 2])),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        pad = data + b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += pad
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + _tag_xyz(0.9642, 1.0, 0.8249)[8:] + b"\0" * 4 + b"\0" * 44)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def unprocess(srgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` display sRGB in [0, 1] -> RAW-like linear light."""
    from exposure_engine.imageio.transfer import srgb_to_linear

    x = np.clip(srgb_to_linear(srgb.astype(np.float64)), 0.0, 1.0)
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * x) / 3.0)  # inverse smoothstep
    x = x * np.asarray(GAINS) * 2.0 ** EV
    return np.clip(x, 0.0, 1.0)


def main(src: str, dst: str) -> None:
    import cv2
    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(src).convert("RGB"), np.float64) / 255.0
    lin = unprocess(rgb)
    h, w = lin.shape[:2]
    k = LONG_EDGE / max(h, w)
    lin = cv2.resize(lin, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    out = np.round(np.clip(lin, 0, 1) * 65535).astype(np.uint16)
    tifffile.imwrite(dst, out, photometric="rgb", compression="zlib", predictor=True,
                     iccprofile=linear_srgb_icc(), description=None, metadata=None)
    print(f"{dst}: {out.shape[1]}x{out.shape[0]}, {Path(dst).stat().st_size} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
