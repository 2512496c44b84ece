"""Embedded ICC profiles: exact float conversion for matrix/TRC profiles, littlecms for the rest.

Most photo profiles (sRGB, Adobe RGB, Display P3, ProPhoto, linear variants) are *matrix/TRC* profiles: three
tone curves and three colorants. Those are converted here in float (per-channel curve -> XYZ D50 -> linear sRGB),
which works for any bit depth, keeps 16-bit and float precision, and recognises linear (gamma 1.0) profiles.
Other profiles (LUT-based, CMYK, Lab) go through Pillow's ImageCms (littlecms), which only handles 8-bit
images; where neither applies the caller gets a warning, never silence.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from .transfer import srgb_to_linear


class ICCError(ValueError):
    """A profile that cannot be parsed or is not a matrix/TRC profile."""


Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MatrixProfile:
    """A parsed matrix/TRC profile. ``to_xyz`` (3, 3): linear device RGB -> XYZ (D50 PCS), ``curves`` per channel
    (one for grey profiles); ``gammas`` holds the pure-power exponent of each curve or None for other shapes."""

    description: str
    colour_space: str                    # "RGB" or "GRAY"
    to_xyz: np.ndarray | None
    curves: tuple[Curve, ...]
    gammas: tuple[float | None, ...]

    @property
    def is_linear(self) -> bool:
        return all(g is not None and abs(g - 1.0) < 1e-3 for g in self.gammas)

    def srgb_matrix(self) -> np.ndarray | None:
        """(3, 3) linear device RGB -> linear sRGB, or None when the primaries are sRGB's already (or grey)."""
        if self.colour_space == "GRAY":
            return None
        m = srgb_from_xyz_d50() @ self.to_xyz
        # Profiles that call themselves sRGB differ in the 4th decimal of their colorants (s15Fixed16 rounding,
        # D50 adaptation variants): treat those as sRGB rather than nudging every pixel by 1e-4.
        return None if np.allclose(m, np.eye(3), atol=1e-3) else m

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Normalised device values (..., C) -> linear sRGB (..., 3) float32. Negatives (out-of-sRGB-gamut
        colours) clamp to 0: every filter downstream expects non-negative light."""
        v = np.asarray(v, np.float64)
        lin = np.stack([self.curves[min(c, len(self.curves) - 1)](v[..., c]) for c in range(v.shape[-1])], -1)
        if self.colour_space == "GRAY":
            return np.repeat(lin[..., :1], 3, axis=-1).astype(np.float32)
        m = self.srgb_matrix()
        out = lin if m is None else lin @ m.T
        return np.clip(out, 0.0, None).astype(np.float32)

    def same_as_srgb(self) -> bool:
        """True when decoding with this profile equals the plain sRGB curve (within 1e-4 everywhere)."""
        if self.colour_space != "RGB":
            return False
        x = np.linspace(0, 1, 257)
        ref = srgb_to_linear(x)
        if not all(np.abs(c(x) - ref).max() < 1e-4 for c in self.curves):
            return False
        return self.srgb_matrix() is None


def _s15(b: bytes) -> float:
    return struct.unpack(">i", b)[0] / 65536.0


def _tags(data: bytes) -> dict[str, bytes]:
    if len(data) < 132 or data[36:40] != b"acsp":
        raise ICCError("not an ICC profile (no 'acsp' signature)")
    (n,) = struct.unpack(">I", data[128:132])
    if n > 1000 or 132 + 12 * n > len(data):
        raise ICCError("corrupt tag table")
    tags = {}
    for i in range(n):
        sig, off, size = struct.unpack(">4sII", data[132 + 12 * i: 144 + 12 * i])
        if off + size > len(data):
            raise ICCError(f"tag {sig!r} runs past the end of the profile")
        tags[sig.decode("latin-1")] = data[off: off + size]
    return tags


def _curve(t: bytes) -> tuple[Curve, float | None]:
    kind = t[:4]
    if kind == b"curv":
        (n,) = struct.unpack(">I", t[8:12])
        if n == 0:
            return (lambda x: np.clip(x, 0, None)), 1.0
        if n == 1:
            g = struct.unpack(">H", t[12:14])[0] / 256.0
            return (lambda x, g=g: np.clip(x, 0, None) ** g), g
        if len(t) < 12 + 2 * n:
            raise ICCError("truncated curve")
        table = np.frombuffer(t[12: 12 + 2 * n], ">u2").astype(np.float64) / 65535.0
        grid = np.linspace(0.0, 1.0, n)
        return (lambda x, table=table, grid=grid: np.interp(x, grid, table)), None
    if kind == b"para":
        (ftype,) = struct.unpack(">H", t[8:10])
        counts = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
        if ftype not in counts or len(t) < 12 + 4 * counts[ftype]:
            raise ICCError(f"unsupported parametric curve type {ftype}")
        p = [_s15(t[12 + 4 * i: 16 + 4 * i]) for i in range(counts[ftype])]
        g, a, b, c, d, e, f = (p + [1.0, 0.0, 0.0, 0.0, 0.0, 0.0])[:7] if ftype == 0 else (p + [0.0] * 7)[:7]

        def para(x: np.ndarray, ftype=ftype, g=g, a=a, b=b, c=c, d=d, e=e, f=f) -> np.ndarray:
            x = np.asarray(x, np.float64)
            if ftype == 0:
                return np.clip(x, 0, None) ** g
            if ftype in (1, 2):
                base = np.clip(a * x + b, 0, None) ** g
                return np.where(x >= -b / a, base, 0.0) + (c if ftype == 2 else 0.0)
            if ftype == 3:
                return np.where(x >= d, np.clip(a * x + b, 0, None) ** g, c * x)
            return np.where(x >= d, np.clip(a * x + b, 0, None) ** g + e, c * x + f)

        pure = g if ftype == 0 or (ftype in (1, 3) and abs(a - 1) < 1e-4 and abs(b) < 1e-4 and
                                   (ftype == 1 or d <= 1e-6)) else None
        return para, pure
    raise ICCError(f"unsupported curve type {kind!r} (not a matrix/TRC profile)")


def _description(tags: dict[str, bytes]) -> str:
    t = tags.get("desc", b"")
    try:
        if t[:4] == b"desc":
            (n,) = struct.unpack(">I", t[8:12])
            return t[12: 12 + n].split(b"\0")[0].decode("latin-1")
        if t[:4] == b"mluc":
            (count, rec) = struct.unpack(">II", t[8:16])
            length, off = struct.unpack(">II", t[16 + 4: 16 + 12]) if count else (0, 0)
            return t[off: off + length].decode("utf-16-be")
    except (struct.error, UnicodeDecodeError):
        pass
    return "(no description)"


def parse_matrix_profile(data: bytes) -> MatrixProfile:
    """Parse an RGB or grey matrix/TRC ICC profile. Raises :class:`ICCError` for anything else."""
    tags = _tags(data)
    space = data[16:20].decode("latin-1").strip()
    desc = _description(tags)
    if space == "GRAY" and "kTRC" in tags:
        curve, gamma = _curve(tags["kTRC"])
        return MatrixProfile(desc, "GRAY", None, (curve,), (gamma,))
    if space != "RGB":
        raise ICCError(f"a {space} profile, not an RGB or grey one")
    needed = ("rXYZ", "gXYZ", "bXYZ", "rTRC", "gTRC", "bTRC")
    if not all(k in tags for k in needed) or "A2B0" in tags:
        raise ICCError("a LUT-based profile, not a matrix/TRC one")
    cols = []
    for k in needed[:3]:
        t = tags[k]
        if t[:4] != b"XYZ " or len(t) < 20:
            raise ICCError(f"bad {k} tag")
        cols.append([_s15(t[8:12]), _s15(t[12:16]), _s15(t[16:20])])
    parsed = [_curve(tags[k]) for k in needed[3:]]
    return MatrixProfile(desc, "RGB", np.array(cols).T, tuple(c for c, _ in parsed), tuple(g for _, g in parsed))


#: The creation date-time written into the header of the sRGB profile we embed (ICC.1 7.2.8: six big-endian
#: uint16, year to second). littlecms stamps the current time there, which made every file we write, and every
#: training crop seeded by a file's hash, depend on the second it was written.
PROFILE_DATE = (2026, 1, 1, 0, 0, 0)


@lru_cache(maxsize=1)
def srgb_profile_bytes() -> bytes:
    """The sRGB ICC profile littlecms builds (embedded in every file we write), with a fixed creation date
    (:data:`PROFILE_DATE`) so that the same pixels always give the same file."""
    import hashlib
    import struct

    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[24:36] = struct.pack(">6H", *PROFILE_DATE)
    if any(data[84:100]):  # a profile ID covers the date: recompute it (ICC.1 7.2.18: flags, intent, ID zeroed)
        masked = bytearray(data)
        masked[44:48] = masked[64:68] = b"\0" * 4
        masked[84:100] = b"\0" * 16
        data[84:100] = hashlib.md5(masked).digest()
    return bytes(data)


@lru_cache(maxsize=1)
def srgb_from_xyz_d50() -> np.ndarray:
    """(3, 3) XYZ (D50 PCS) -> linear sRGB, from littlecms's own sRGB profile (Bradford-adapted colorants), so
    that an sRGB-tagged file decodes exactly like an untagged one."""
    return np.linalg.inv(parse_matrix_profile(srgb_profile_bytes()).to_xyz)


def profile_description(data: bytes) -> str:
    try:
        return _description(_tags(data))
    except ICCError:
        return "(unparseable profile)"
