"""Convert an X window dump (``xwd -root``, 24/32-bit TrueColor) to PNG: the screenshots of docs/darktable.md.

    python tests/integration/darktable/xwd2png.py shot.xwd shot.png [x y w h]
"""
from __future__ import annotations

import struct
import sys

import numpy as np


def read_xwd(data: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a TrueColor XWD file (24 or 32 bits per pixel)."""
    h = struct.unpack(">25I", data[:100])
    header_size, version, _fmt, depth, width, height = h[:6]
    byte_order, bpp, bytes_per_line, ncolors = h[7], h[11], h[12], h[19]
    red_mask, green_mask, blue_mask = h[14], h[15], h[16]
    if version != 7 or bpp not in (24, 32) or depth not in (24, 32):
        raise ValueError(f"unsupported XWD (version {version}, depth {depth}, {bpp} bits per pixel)")
    start = header_size + 12 * ncolors
    rows = np.frombuffer(data, dtype=np.uint8, count=height * bytes_per_line, offset=start)
    px = rows.reshape(height, bytes_per_line)[:, : width * (bpp // 8)].reshape(height, width, bpp // 8)
    px = px.astype(np.uint32)
    order = range(bpp // 8) if byte_order == 0 else reversed(range(bpp // 8))  # 0: least significant first
    raw = np.zeros((height, width), np.uint32)
    for k, i in enumerate(order):
        raw |= px[..., i] << (8 * k)

    def channel(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((raw & mask) >> shift).astype(np.uint8)

    return np.stack([channel(red_mask), channel(green_mask), channel(blue_mask)], -1)


def main() -> None:
    from PIL import Image

    img = read_xwd(open(sys.argv[1], "rb").read())
    if len(sys.argv) == 7:
        x, y, w, h = map(int, sys.argv[3:7])
        img = img[y:y + h, x:x + w]
    Image.fromarray(img).save(sys.argv[2])


if __name__ == "__main__":
    main()
