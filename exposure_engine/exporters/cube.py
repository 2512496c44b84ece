"""A whole edit sequence as a 3D LUT in the .cube format (Adobe/Resolve "Cube LUT Specification 1.0").

The LUT's input is **sRGB-encoded** RGB (not linear): its lattice is then spread evenly in perceptual terms, so
shadows get as many samples as highlights. A linear-input lattice of the same size would put about one node per
stop below 1/64, and the sequence's gamma/curve steps bend the shadows the most. The output is the sequence's
output: display-encoded sRGB in [0, 1]. darktable's ``lut3d`` with colorspace "sRGB" converts its working space to
exactly this encoding and back, so the LUT slots into any pipeline (:mod:`.darktable`, exact mode).

Lattice node (i, j, k) -> input (i, j, k) / (N - 1) for (R, G, B); rows are written with R changing fastest, as
the format requires. Error against the direct renderer (tetrahedral interpolation, random sequences, measured by
tests/test_cube.py): see docs/darktable.md.
"""
from __future__ import annotations

import io
import re

import numpy as np

from ..imageio.transfer import srgb_to_linear_exact
from ..sequence import EditSequence, as_sequence

DEFAULT_SIZE = 33
MAX_SIZE = 256  # darktable's lut3d refuses larger cubes


def lattice(size: int) -> np.ndarray:
    """The LUT's input nodes, sRGB-encoded: ``(size, size, size, 3)`` float64 indexed [b, g, r] (file order)."""
    v = np.linspace(0.0, 1.0, size)
    b, g, r = np.meshgrid(v, v, v, indexing="ij")
    return np.stack([r, g, b], axis=-1)


def sequence_lut(sequence: EditSequence | dict | str, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Sample ``sequence`` on the lattice: ``(size, size, size, 3)`` float32 outputs indexed [b, g, r]."""
    from ..renderer import render

    if not 2 <= size <= MAX_SIZE:
        raise ValueError(f"LUT size must be in 2..{MAX_SIZE}, got {size}")
    linear = srgb_to_linear_exact(lattice(size)).reshape(size * size, size, 3)
    return render(linear, as_sequence(sequence), clip=True).reshape(size, size, size, 3)


def write_cube(lut: np.ndarray, title: str = "exposure-engine") -> bytes:
    """.cube text of ``lut`` ``(N, N, N, 3)`` indexed [b, g, r] with values in [0, 1]."""
    n = lut.shape[0]
    if lut.shape != (n, n, n, 3):
        raise ValueError(f"expected an (N, N, N, 3) LUT, got {lut.shape}")
    buf = io.StringIO()
    safe_title = title.replace('"', "'").replace("\n", " ")
    buf.write(f'TITLE "{safe_title}"\n')
    buf.write("# input: sRGB-encoded RGB; output: display-encoded sRGB (exposure-engine edit sequence)\n")
    buf.write(f"LUT_3D_SIZE {n}\nDOMAIN_MIN 0.0 0.0 0.0\nDOMAIN_MAX 1.0 1.0 1.0\n")
    np.savetxt(buf, np.clip(lut.reshape(-1, 3), 0.0, 1.0), fmt="%.6f")
    return buf.getvalue().encode("ascii")


def sequence_to_cube(sequence: EditSequence | dict | str, size: int = DEFAULT_SIZE,
                     title: str = "exposure-engine") -> bytes:
    return write_cube(sequence_lut(sequence, size), title)


def read_cube(data: bytes | str) -> np.ndarray:
    """Parse a 3D .cube (0..1 domain) into ``(N, N, N, 3)`` float32 indexed [b, g, r]."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    size, rows = None, []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("TITLE") or line.startswith("DOMAIN_"):
            continue
        if line.startswith("LUT_3D_SIZE"):
            size = int(line.split()[1])
        elif re.match(r"^[-+0-9.eE]", line):
            vals = line.split()
            if len(vals) != 3:
                raise ValueError(f".cube line {line_no}: expected 3 numbers, got {line!r}")
            rows.append([float(v) for v in vals])
        else:
            raise ValueError(f".cube line {line_no}: unsupported keyword {line.split()[0]!r}")
    if size is None:
        raise ValueError(".cube: no LUT_3D_SIZE")
    if len(rows) != size ** 3:
        raise ValueError(f".cube: {len(rows)} rows for LUT_3D_SIZE {size} (expected {size ** 3})")
    return np.asarray(rows, dtype=np.float32).reshape(size, size, size, 3)


def apply_lut(lut: np.ndarray, encoded: np.ndarray) -> np.ndarray:
    """Tetrahedral interpolation of ``lut`` ``(N, N, N, 3)`` [b, g, r] at sRGB-encoded ``encoded`` ``(..., 3)``
    (as darktable's lut3d does it): returns ``(..., 3)`` float64."""
    n = lut.shape[0]
    x = np.clip(np.asarray(encoded, dtype=np.float64), 0.0, 1.0) * (n - 1)
    i = np.clip(np.floor(x).astype(np.int64), 0, n - 2)
    f = x - i
    L = lut.astype(np.float64)

    def at(dr, dg, db):
        return L[i[..., 2] + db, i[..., 1] + dg, i[..., 0] + dr]

    fr, fg, fb = f[..., 0:1], f[..., 1:2], f[..., 2:3]
    c000, c111 = at(0, 0, 0), at(1, 1, 1)
    out = np.empty(x.shape, dtype=np.float64)
    # The six tetrahedra of the unit cube, chosen by the order of the fractional parts.
    cases = [
        ((fr >= fg) & (fg >= fb), (1, 0, 0), (1, 1, 0), fr, fg, fb),
        ((fr >= fb) & (fb > fg), (1, 0, 0), (1, 0, 1), fr, fb, fg),
        ((fb > fr) & (fr >= fg), (0, 0, 1), (1, 0, 1), fb, fr, fg),
        ((fg > fr) & (fr >= fb), (0, 1, 0), (1, 1, 0), fg, fr, fb),
        ((fg >= fb) & (fb > fr), (0, 1, 0), (0, 1, 1), fg, fb, fr),
        ((fb > fg) & (fg > fr), (0, 0, 1), (0, 1, 1), fb, fg, fr),
    ]
    done = np.zeros(x.shape[:-1] + (1,), dtype=bool)
    for mask, a, b, t1, t2, t3 in cases:
        m = mask & ~done
        ca, cb = at(*a), at(*b)
        val = c000 + t1 * (ca - c000) + t2 * (cb - ca) + t3 * (c111 - cb)
        out = np.where(m, val, out)
        done |= m
    return out
