"""Colour-space conversions for metrics and styles (numpy, vectorised, float64 inside).

CIELAB is computed from linear sRGB-primaries RGB through CIE XYZ with the D65 white the sRGB matrix maps
(1, 1, 1) to, so sRGB white is exactly L* = 100, a* = b* = 0, in CIE units (not OpenCV's 8-bit scaling).
HLS follows :mod:`colorsys` (hue in [0, 1), lightness and saturation in [0, 1]).
"""
from __future__ import annotations

import numpy as np

from ..imageio.transfer import srgb_to_linear

# sRGB primaries -> CIE XYZ (D65), IEC 61966-2-1; rows X, Y, Z.
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
D65_WHITE = RGB_TO_XYZ.sum(axis=1)  # XYZ of RGB (1, 1, 1)
_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def linear_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB ``(..., 3)`` (negative values clipped to 0) -> CIELAB ``(..., 3)`` float64."""
    lin = np.clip(np.asarray(rgb, np.float64), 0.0, None)
    xyz = lin @ RGB_TO_XYZ.T / D65_WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16.0) / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)


def lab_to_linear(lab: np.ndarray) -> np.ndarray:
    """CIELAB ``(..., 3)`` -> linear RGB ``(..., 3)`` float64 (may leave the gamut: callers clip)."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f ** 3 > _EPS, f ** 3, (116.0 * f - 16.0) / _KAPPA) * D65_WHITE
    return xyz @ XYZ_TO_RGB.T


def srgb_to_lab(display: np.ndarray) -> np.ndarray:
    """Display sRGB ``(..., 3)`` in [0, 1] -> CIELAB ``(..., 3)`` float64."""
    return linear_to_lab(srgb_to_linear(np.clip(display, 0.0, 1.0), np.float64))


def rgb_to_hls(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., 3)`` values in [0, 1] -> (h, l, s), each ``(...)``, as :func:`colorsys.rgb_to_hls`."""
    rgb = np.asarray(rgb, np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    c = mx - mn
    light = (mx + mn) / 2.0
    grey = c <= 0
    safe_c = np.where(grey, 1.0, c)
    denom = np.where(light <= 0.5, mx + mn, 2.0 - mx - mn)
    sat = np.where(grey, 0.0, c / np.where(grey, 1.0, denom))
    rc, gc, bc = (mx - r) / safe_c, (mx - g) / safe_c, (mx - b) / safe_c
    h = np.where(r == mx, bc - gc, np.where(g == mx, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    return h, light, sat


def hls_to_rgb(h: np.ndarray, light: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """(h, l, s) arrays -> ``(..., 3)`` RGB float64, as :func:`colorsys.hls_to_rgb`."""
    h, light, sat = (np.asarray(x, np.float64) for x in (h, light, sat))
    m2 = np.where(light <= 0.5, light * (1.0 + sat), light + sat - light * sat)
    m1 = 2.0 * light - m2

    def channel(hue: np.ndarray) -> np.ndarray:
        hue = hue % 1.0
        return np.where(hue < 1 / 6, m1 + (m2 - m1) * hue * 6.0,
                        np.where(hue < 0.5, m2,
                                 np.where(hue < 2 / 3, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0, m1)))

    out = np.stack([channel(h + 1 / 3), channel(h), channel(h - 1 / 3)], axis=-1)
    return np.where((sat == 0)[..., None], light[..., None], out)
