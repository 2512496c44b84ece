"""The eight filters of Exposure (Hu et al., TOG 2018): the single source of truth.

Each filter is defined once, here, with everything the rest of the engine needs:

* ``name`` / ``title``       its name in edit sequences (JSON) and for people;
* ``n_raw``                  how many raw outputs the policy head produces for it;
* ``params_from_raw``        the paper's mapping from raw network outputs to parameters;
* ``apply``                  the formula in torch, batched and differentiable (training, proxies);
* ``pixel``                  the same formula for one pixel, compiled by numba (full-resolution renderer),
                             branch-free so that the renderer's per-step loops vectorise;
* ``prepare``                per-step kernel constants for ``pixel`` from the packed parameters;
* ``to_json`` / ``from_json`` its parameters in the edit-sequence format v1;
* ``label``                  a one-line human description ("Exposure +1.21 EV");
* ``draw``                   a small icon for step strips.

Parameters travel inside the engine as a *packed* float vector per step (``n_packed`` values, see each
filter); the JSON form is the contract with the outside world (docs/edit-sequence.md).

Tensor conventions (kornia-like): images are ``(B, 3, H, W)`` float tensors holding linear-light RGB with
sRGB/Rec.709 primaries at the start of a sequence; packed parameters are ``(B, n_packed)``; raw policy
outputs are ``(B, n_raw)``. Every filter is pointwise (a function of one pixel's RGB), which is what lets
parameters decided on a 64x64 proxy apply unchanged at any resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numba
import numpy as np
import torch

from .vecmath import clamp, cos_pi, fmax, fmin, pow_f32

# Luminance weights used by the paper (not Rec.709's): lum(p) = 0.27 R + 0.67 G + 0.06 B.
LUM_R, LUM_G, LUM_B = 0.27, 0.67, 0.06
LUM = np.array([LUM_R, LUM_G, LUM_B], np.float32)  # the same weights as a vector, for ``image @ LUM``
CURVE_SEGMENTS = 8  # L in the paper's piecewise-linear curve
GAMMA_FLOOR = 0.001  # gamma's max(img, 0.001): keeps pow differentiable at 0
CONTRAST_EPS = 1e-6
WB_EPS = 1e-5
MAX_PACKED = 3 * CURVE_SEGMENTS  # the widest packed vector (colour curves)
MAX_KERNEL_CONSTS = 32  # the widest ``prepare`` output (colour curves: 24 slopes + 3 normalisers)


def lum(img: torch.Tensor) -> torch.Tensor:
    """Paper luminance of ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    return LUM_R * img[:, 0:1] + LUM_G * img[:, 1:2] + LUM_B * img[:, 2:3]


def tanh_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The reference code's squashing: (tanh(x) * 0.5 + 0.5) * (hi - lo) + lo."""
    return (torch.tanh(x) * 0.5 + 0.5) * (hi - lo) + lo


def _col(p: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, 1)`` parameter -> ``(B, 1, 1, 1)`` for broadcasting over an image."""
    return p.reshape(-1, 1, 1, 1)


def _curve(img: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """The paper's monotone piecewise-linear curve.

    f(x) = (L / sum t) * sum_i clip(x - i/L, 0, 1/L) * t_i, applied to ``img`` ``(B, C, H, W)`` with
    ``slopes`` ``(B, C, L)`` (C = 1 broadcasts one curve over all channels). Output lies in [0, 1].
    """
    n = slopes.shape[-1]
    total = slopes.sum(dim=-1)  # (B, C)
    out = torch.zeros_like(img)
    for i in range(n):
        seg = torch.clamp(img - i / n, 0.0, 1.0 / n)
        out = out + seg * slopes[:, :, i, None, None]
    return out * (n / total)[:, :, None, None]


def rgb_to_hsv_sv(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V = max, m = min and S = (V - m) / V (0 where V = 0) of ``(B, 3, H, W)``; each ``(B, 1, H, W)``."""
    v = img.amax(dim=1, keepdim=True)
    m = img.amin(dim=1, keepdim=True)
    safe_v = torch.where(v > 0, v, torch.ones_like(v))
    s = torch.where(v > 0, (v - m) / safe_v, torch.zeros_like(v))
    return v, m, s


# ---------------------------------------------------------------------------------------------------------------
# The filter type


@dataclass(frozen=True)
class Filter:
    name: str
    title: str
    n_raw: int
    n_packed: int
    identity: tuple[float, ...]
    params_from_raw: Callable[[torch.Tensor], torch.Tensor]
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    pixel: Callable  # numba: (r, g, b, k: float32[:]) -> (r, g, b), k = prepare(packed)
    to_json: Callable[[Sequence[float]], dict]
    from_json: Callable[[dict], list[float]]
    label: Callable[[Sequence[float]], str]
    icon: str  # how draw() renders it: "scalar", "gains", "curve", "curves"
    scalar_range: tuple[float, float] = (0.0, 1.0)  # for "scalar" icons: the range of the bar
    index: int = -1  # action id; set by the registry
    # packed float32 (n_packed,) -> the constants ``pixel`` reads, float32 (<= MAX_KERNEL_CONSTS,): work done
    # once per step instead of once per pixel (2^ev, curve normalisation). None: ``pixel`` reads the packed values.
    prepare: Callable[[np.ndarray], np.ndarray] | None = None

    def draw(self, packed: Sequence[float], size: int = 64) -> np.ndarray:
        """A ``size x size`` RGB uint8 icon of this step's parameters (curves as curves, scalars as bars)."""
        return _draw_icon(self, [float(v) for v in packed], size)


def _njit(fn):
    # cache=True: the renderer kernel that inlines these is cached on disk, so a CLI call does not recompile.
    # error_model="numpy": float division by zero gives inf/nan instead of raising, so there is no branch and
    # the renderer's per-step loops vectorise. The kernels select (``a if c else b``) rather than branch.
    return numba.njit(fn, cache=True, inline="always", fastmath=False, error_model="numpy")


# ---------------------------------------------------------------------------------------------------------------
# Exposure: out = img * 2^E, E = 3.5 tanh(x)


@_njit
def _exposure_px(r, g, b, k):
    m = k[0]  # 2^ev, see _exposure_prepare
    return r * m, g * m, b * m


def _exposure_prepare(p: np.ndarray) -> np.ndarray:
    # float32 exp2 of the float32 ev, as torch.exp2 computes it in apply.
    return np.exp2(p[:1].astype(np.float32))


EXPOSURE = Filter(
    name="exposure",
    title="Exposure",
    n_raw=1,
    n_packed=1,
    identity=(0.0,),
    params_from_raw=lambda x: 3.5 * torch.tanh(x),
    apply=lambda img, p: img * torch.exp2(_col(p[:, 0])),
    pixel=_exposure_px,
    prepare=_exposure_prepare,
    to_json=lambda p: {"ev": float(p[0])},
    from_json=lambda d: [float(d["ev"])],
    label=lambda p: f"Exposure {p[0]:+.2f} EV",
    icon="scalar",
    scalar_range=(-3.5, 3.5),
)

# ---------------------------------------------------------------------------------------------------------------
# Gamma: out = max(img, 0.001)^g, g = exp(ln3 * tanh(x)) in [1/3, 3]


@_njit
def _gamma_px(r, g, b, k):
    # pow_f32 instead of **: libm powf is a scalar call that stops vectorisation (exposure_engine/vecmath.py).
    floor = np.float32(GAMMA_FLOOR)
    e = k[0]
    return pow_f32(fmax(r, floor), e), pow_f32(fmax(g, floor), e), pow_f32(fmax(b, floor), e)


GAMMA = Filter(
    name="gamma",
    title="Gamma",
    n_raw=1,
    n_packed=1,
    identity=(1.0,),
    params_from_raw=lambda x: torch.exp(math.log(3.0) * torch.tanh(x)),
    apply=lambda img, p: torch.pow(torch.clamp(img, min=GAMMA_FLOOR), _col(p[:, 0])),
    pixel=_gamma_px,
    to_json=lambda p: {"gamma": float(p[0])},
    from_json=lambda d: [float(d["gamma"])],
    label=lambda p: f"Gamma {p[0]:.2f} (1/{1.0 / p[0]:.2f})",
    icon="curve",
)

# ---------------------------------------------------------------------------------------------------------------
# White balance: out = img * gains; G, B gains exp(0.5 tanh(x)), R fixed at 1, then normalised by lum(gains)


def _wb_from_raw(x: torch.Tensor) -> torch.Tensor:
    # The R output is masked to 0 (gain exp(0) = 1): only two degrees of freedom, as in the reference code.
    mask = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device)
    gains = torch.exp(tanh_range(x * mask, -0.5, 0.5))
    norm = WB_EPS + LUM_R * gains[:, 0] + LUM_G * gains[:, 1] + LUM_B * gains[:, 2]
    return gains / norm[:, None]


@_njit
def _wb_px(r, g, b, p):
    return r * p[0], g * p[1], b * p[2]


WHITE_BALANCE = Filter(
    name="white_balance",
    title="White balance",
    n_raw=3,
    n_packed=3,
    identity=(1.0, 1.0, 1.0),
    params_from_raw=_wb_from_raw,
    apply=lambda img, p: img * p[:, :, None, None],
    pixel=_wb_px,
    to_json=lambda p: {"gains": [float(p[0]), float(p[1]), float(p[2])]},
    from_json=lambda d: [float(v) for v in d["gains"]],
    label=lambda p: f"White balance R×{p[0]:.2f} G×{p[1]:.2f} B×{p[2]:.2f}",
    icon="gains",
)

# ---------------------------------------------------------------------------------------------------------------
# Saturation: x = min(img, 1); in HSV, s' = s + (1 - s)(0.5 - |0.5 - v|) 0.8; out = lerp(x, hsv2rgb(h, s', v), p)
# With h and v fixed, every channel of an HSV colour is c = v (1 - s k_c(h)), so the enhanced colour is
# c' = v - (v - c) s'/s: exactly hsv2rgb(h, s', v) without the six-sector hue round trip.
# (Greys, s = 0, take hue 0 as in every HSV implementation; see _saturation_apply.)


def _saturation_apply(img: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x = torch.clamp(img, max=1.0)
    v, _, s = rgb_to_hsv_sv(x)
    s2 = s + (1.0 - s) * (0.5 - torch.abs(0.5 - v)) * 0.8
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    ratio = torch.where(s > 0, s2 / safe_s, torch.zeros_like(s))
    enhanced = v - (v - x) * ratio
    # An exact grey has hue 0 (red) in HSV, as in colorsys and the reference code's tf.image.rgb_to_hsv, so the
    # paper's filter tints it: hsv2rgb(0, s', v) = (v, v (1 - s'), v (1 - s')). Kept for fidelity.
    grey = torch.cat([v, v * (1.0 - s2), v * (1.0 - s2)], dim=1)
    enhanced = torch.where(s > 0, enhanced, grey)
    return x + _col(p[:, 0]) * (enhanced - x)


@_njit
def _saturation_px(r, g, b, p):
    one = np.float32(1.0)
    half = np.float32(0.5)
    r = fmin(r, one)
    g = fmin(g, one)
    b = fmin(b, one)
    v = fmax(r, fmax(g, b))
    m = fmin(r, fmin(g, b))
    # Both cases are computed and selected, with no branch, so the loop over a row vectorises (a division by
    # zero in the unselected lane is harmless under error_model="numpy").
    s = (v - m) / v
    s = s if v > 0 else np.float32(0.0)
    s2 = s + (one - s) * (half - abs(half - v)) * np.float32(0.8)
    ratio = s2 / s
    colour = s > 0
    er = v - (v - r) * ratio if colour else v  # exact grey: HSV hue 0 (red), see _saturation_apply
    eg = v - (v - g) * ratio if colour else v * (one - s2)
    eb = v - (v - b) * ratio if colour else v * (one - s2)
    a = p[0]
    return r + a * (er - r), g + a * (eg - g), b + a * (eb - b)


SATURATION = Filter(
    name="saturation",
    title="Saturation",
    n_raw=1,
    n_packed=1,
    identity=(0.0,),
    params_from_raw=torch.sigmoid,
    apply=_saturation_apply,
    pixel=_saturation_px,
    to_json=lambda p: {"amount": float(p[0])},
    from_json=lambda d: [float(d["amount"])],
    label=lambda p: f"Saturation +{100 * p[0]:.0f}%",
    icon="scalar",
)

# ---------------------------------------------------------------------------------------------------------------
# Tone curve: one 8-segment monotone curve on all channels, slopes tanh_range(0.5, 2.0)


@_njit
def _curve_1(x, c, off, inv):
    # The torch formula operation for operation: sum_i clip(x - i/8, 0, 1/8) * t_i, added left to right, times
    # 8 / sum(t) (``inv``, prepared once per step by _curve_prepare with torch's float32 summation order).
    # Bit-identical results matter here: a curve maps 1.0 to 1.0 only up to rounding, and the saturation
    # filter treats an exact grey differently from a grey one ulp off. Branch-free selects and multiply-adds
    # that vectorise; written out rather than looped, as a loop keeps reference-count calls on ``c``.
    z = np.float32(0.0)
    h = np.float32(0.125)
    acc = (clamp(x, z, h) * c[off]
           + clamp(x - np.float32(0.125), z, h) * c[off + 1]
           + clamp(x - np.float32(0.25), z, h) * c[off + 2]
           + clamp(x - np.float32(0.375), z, h) * c[off + 3]
           + clamp(x - np.float32(0.5), z, h) * c[off + 4]
           + clamp(x - np.float32(0.625), z, h) * c[off + 5]
           + clamp(x - np.float32(0.75), z, h) * c[off + 6]
           + clamp(x - np.float32(0.875), z, h) * c[off + 7])
    return acc * c[inv]


assert CURVE_SEGMENTS == 8, "_curve_1 is written out for 8 segments"


def _curve_prepare(p: np.ndarray) -> np.ndarray:
    """Slopes ``(C*8,)`` -> ``(C*8 + C,)``: the slopes, then 8 / sum(t) per curve, both in float32 as the torch
    filter computes them (its 8-element sum adds left to right)."""
    t = p.astype(np.float32).reshape(-1, CURVE_SEGMENTS)
    total = np.zeros(t.shape[0], np.float32)
    for i in range(CURVE_SEGMENTS):
        total = total + t[:, i]
    return np.concatenate([t.ravel(), np.float32(CURVE_SEGMENTS) / total]).astype(np.float32)


@_njit
def _tone_px(r, g, b, p):
    return _curve_1(r, p, 0, 8), _curve_1(g, p, 0, 8), _curve_1(b, p, 0, 8)


def _fmt_slopes(s: Sequence[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in s) + "]"


TONE_CURVE = Filter(
    name="tone_curve",
    title="Tone curve",
    n_raw=CURVE_SEGMENTS,
    n_packed=CURVE_SEGMENTS,
    identity=(1.0,) * CURVE_SEGMENTS,
    params_from_raw=lambda x: tanh_range(x, 0.5, 2.0),
    apply=lambda img, p: _curve(img, p[:, None, :]),
    pixel=_tone_px,
    prepare=_curve_prepare,
    to_json=lambda p: {"slopes": [float(v) for v in p]},
    from_json=lambda d: [float(v) for v in d["slopes"]],
    label=lambda p: f"Tone curve {_fmt_slopes(p)}",
    icon="curve",
)

# ---------------------------------------------------------------------------------------------------------------
# Colour curves: one 8-segment curve per channel, slopes 1 + 0.1 tanh(x) in [0.9, 1.1]


@_njit
def _color_px(r, g, b, p):
    return _curve_1(r, p, 0, 24), _curve_1(g, p, CURVE_SEGMENTS, 25), _curve_1(b, p, 2 * CURVE_SEGMENTS, 26)


COLOR_CURVES = Filter(
    name="color_curves",
    title="Color curves",
    n_raw=3 * CURVE_SEGMENTS,
    n_packed=3 * CURVE_SEGMENTS,
    identity=(1.0,) * (3 * CURVE_SEGMENTS),
    params_from_raw=lambda x: tanh_range(x, 0.9, 1.1),
    apply=lambda img, p: _curve(img, p.reshape(p.shape[0], 3, CURVE_SEGMENTS)),
    pixel=_color_px,
    prepare=_curve_prepare,
    to_json=lambda p: {"slopes": [[float(v) for v in p[c * CURVE_SEGMENTS:(c + 1) * CURVE_SEGMENTS]]
                                  for c in range(3)]},
    from_json=lambda d: [float(v) for row in d["slopes"] for v in row],
    label=lambda p: "Color curves R" + _fmt_slopes(p[0:8]) + " G" + _fmt_slopes(p[8:16])
    + " B" + _fmt_slopes(p[16:24]),
    icon="curves",
)

# ---------------------------------------------------------------------------------------------------------------
# Contrast: L = clip(lum, 0, 1); out = lerp(img, img / (L + 1e-6) * (0.5 - 0.5 cos(pi L)), p), p = tanh(x)


def _contrast_apply(img: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    L = torch.clamp(lum(img), 0.0, 1.0)
    cl = 0.5 - 0.5 * torch.cos(math.pi * L)
    enhanced = img / (L + CONTRAST_EPS) * cl
    return img + _col(p[:, 0]) * (enhanced - img)


@_njit
def _contrast_px(r, g, b, p):
    L = np.float32(LUM_R) * r + np.float32(LUM_G) * g + np.float32(LUM_B) * b
    L = clamp(L, np.float32(0.0), np.float32(1.0))
    # cos_pi vectorises where math.cos is a scalar libm call. The formula is kept as torch computes it
    # (not as sin(pi L / 2)^2, which is better conditioned): near L = 0 both then round the same way.
    cl = np.float32(0.5) - np.float32(0.5) * cos_pi(L)
    k = cl / (L + np.float32(CONTRAST_EPS))
    a = p[0]
    return r + a * (r * k - r), g + a * (g * k - g), b + a * (b * k - b)


CONTRAST = Filter(
    name="contrast",
    title="Contrast",
    n_raw=1,
    n_packed=1,
    identity=(0.0,),
    params_from_raw=torch.tanh,
    apply=_contrast_apply,
    pixel=_contrast_px,
    to_json=lambda p: {"amount": float(p[0])},
    from_json=lambda d: [float(d["amount"])],
    label=lambda p: f"Contrast {p[0]:+.2f}",
    icon="scalar",
    scalar_range=(-1.0, 1.0),
)

# ---------------------------------------------------------------------------------------------------------------
# Black & white: out = lerp(img, lum(img) on all channels, p), p = sigmoid(x)


@_njit
def _bw_px(r, g, b, p):
    L = np.float32(LUM_R) * r + np.float32(LUM_G) * g + np.float32(LUM_B) * b
    a = p[0]
    return r + a * (L - r), g + a * (L - g), b + a * (L - b)


BLACK_AND_WHITE = Filter(
    name="black_and_white",
    title="Black & white",
    n_raw=1,
    n_packed=1,
    identity=(0.0,),
    params_from_raw=torch.sigmoid,
    apply=lambda img, p: img + _col(p[:, 0]) * (lum(img) - img),
    pixel=_bw_px,
    to_json=lambda p: {"amount": float(p[0])},
    from_json=lambda d: [float(d["amount"])],
    label=lambda p: f"Black & white {100 * p[0]:.0f}%",
    icon="scalar",
)

# ---------------------------------------------------------------------------------------------------------------
# The registry: its order is the agent's action space (action id = index).

FILTERS: tuple[Filter, ...] = tuple(
    Filter(**{**f.__dict__, "index": i})
    for i, f in enumerate([EXPOSURE, GAMMA, WHITE_BALANCE, SATURATION, TONE_CURVE, COLOR_CURVES, CONTRAST,
                           BLACK_AND_WHITE])
)
BY_NAME: dict[str, Filter] = {f.name: f for f in FILTERS}
N_FILTERS = len(FILTERS)
TOTAL_RAW = sum(f.n_raw for f in FILTERS)


def get(name: str) -> Filter:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown filter {name!r}; known: {', '.join(BY_NAME)}") from None


def apply_packed(img: torch.Tensor, filter_ids: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Apply a different filter to each batch element.

    img ``(B, 3, H, W)``, filter_ids ``(B,)`` long, packed ``(B, MAX_PACKED)`` (each row's first
    ``n_packed`` values used). Rows are grouped by filter so each formula runs once per call.
    """
    out = torch.empty_like(img)
    for f in FILTERS:
        rows = (filter_ids == f.index).nonzero(as_tuple=True)[0]
        if rows.numel():
            out[rows] = f.apply(img[rows], packed[rows, : f.n_packed])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Icons for step strips


def _draw_icon(f: Filter, p: list[float], size: int) -> np.ndarray:
    import cv2

    icon = np.full((size, size, 3), 245, np.uint8)
    pad = max(2, size // 16)
    inner = size - 2 * pad
    cv2.rectangle(icon, (pad, pad), (size - pad - 1, size - pad - 1), (200, 200, 200), 1)

    def poly(ys: np.ndarray, colour) -> None:
        xs = np.linspace(0, 1, ys.size)
        pts = np.stack([pad + xs * (inner - 1), pad + (1 - np.clip(ys, 0, 1)) * (inner - 1)], 1)
        cv2.polylines(icon, [np.round(pts).astype(np.int32)], False, colour, 1, cv2.LINE_AA)

    xs = torch.linspace(0, 1, 65, dtype=torch.float64)
    if f.icon == "curve":  # gamma and tone curve: the 1-D transfer function on [0, 1]
        img = xs.reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
        ys = f.apply(img, torch.tensor([p], dtype=torch.float64))[0, 0, 0].numpy()
        poly(xs.numpy(), (190, 190, 190))
        poly(ys, (40, 40, 40))
    elif f.icon == "curves":
        slopes = torch.tensor(p, dtype=torch.float64).reshape(1, 3, -1)
        ys = _curve(xs.reshape(1, 1, 1, -1).expand(1, 3, 1, -1), slopes)[0, :, 0].numpy()
        poly(xs.numpy(), (190, 190, 190))
        for c, colour in enumerate([(220, 40, 40), (40, 160, 40), (40, 40, 220)]):
            poly(ys[c], colour)
    elif f.icon == "gains":
        top = max(p) * 1.1
        w = inner // 3
        for c, colour in enumerate([(220, 40, 40), (40, 160, 40), (40, 40, 220)]):
            h = int(round(inner * p[c] / top))
            cv2.rectangle(icon, (pad + c * w + 2, size - pad - h), (pad + (c + 1) * w - 2, size - pad - 1), colour, -1)
    else:  # scalar: a horizontal bar from the range's zero (or left edge) to the value
        lo, hi = f.scalar_range
        to_x = lambda v: int(round(pad + (min(max(v, lo), hi) - lo) / (hi - lo) * (inner - 1)))
        zero = to_x(0.0 if lo < 0 < hi else lo)
        x = to_x(p[0])
        y0, y1 = size // 2 - inner // 6, size // 2 + inner // 6
        cv2.rectangle(icon, (min(zero, x), y0), (max(zero, x), y1), (60, 60, 60), -1)
        cv2.line(icon, (zero, pad), (zero, size - pad - 1), (150, 150, 150), 1)
    return icon
