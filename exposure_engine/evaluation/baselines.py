"""Baselines: what a user gets without the agent, each a function of a *linear* image.

Every baseline maps ``(H, W, 3)`` float32 linear-light RGB (sRGB primaries, the engine's input convention) to
``(H, W, 3)`` float32 display-encoded sRGB in [0, 1], so its output goes through the same metrics as the agent's.

* ``identity``         the input sRGB-encoded, nothing else (how flat and dark a RAW-like input looks);
* ``gimp_auto``        GIMP's Colors > Auto > White Balance (per-channel levels stretch) then Stretch Contrast;
* ``histogram_match``  per-channel CDF matching, in sRGB, to the pooled histogram of the target set (the only
                       baseline that sees the targets: :meth:`Baseline.fit`);
* ``libraw_like``      LibRaw's default development rule (auto-bright with ``auto_bright_thr = 0.01`` and LibRaw's
                       default BT.709-shaped gamma (2.222, 4.5), 8-bit) applied to already-linear data. For real RAW
                       files :func:`libraw_default` runs LibRaw itself through rawpy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ..imageio.transfer import linear_to_srgb, srgb_to_linear

# GIMP's gimp_levels_config_stretch_channel() (app/operations/gimplevelsconfig.c) stops where the cumulative
# share of a channel's histogram is closest to bias = 0.006 at each end. GIMP's manual describes the same command
# as discarding "0.05 %" of the pixels; the code, which is what users get, is what we follow.
GIMP_STRETCH_BIAS = 0.006
GIMP_HISTOGRAM_BINS = 256  # an 8-bit image's histogram, the common case of the menu command

LIBRAW_AUTO_BRIGHT_THR = 0.01  # libraw_output_params_t.auto_bright_thr default: top 1 % of a channel may clip
# Output curves as rawpy's ``gamma=`` (and dcraw's ``-g``) give them: (1 / power, toe slope).
LIBRAW_GAMMA = (2.222, 4.5)  # LibRaw's default: BT.709-shaped
SRGB_GAMMA = (2.4, 12.92)  # the sRGB curve (to within 1e-4)
LIBRAW_MIN_WHITE = 33 * 8 / 65535.0  # the histogram scan stops at bin 32 of 0x2000 (16-bit values >> 3)


def _check_linear(img: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) linear image, got "
                         f"{getattr(img, 'shape', type(img).__name__)}")
    if img.dtype.kind != "f":
        raise ValueError(f"{name}: expected linear float pixels, got {img.dtype}")
    return np.asarray(img, np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Identity


def identity(linear: np.ndarray) -> np.ndarray:
    """The input, clipped to [0, 1] and sRGB-encoded."""
    return linear_to_srgb(np.clip(_check_linear(linear, "identity"), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------
# GIMP: Colors > Auto > White Balance, then Colors > Auto > Stretch Contrast


def gimp_stretch_levels(channel: np.ndarray, bias: float = GIMP_STRETCH_BIAS,
                        bins: int = GIMP_HISTOGRAM_BINS) -> tuple[float, float]:
    """(low_input, high_input) of GIMP's levels stretch for one channel of display values in [0, 1].

    Walks the channel histogram from each end and stops at the first bin where the cumulative share is closer to
    ``bias`` than it would be after adding the next bin; returns (1, 0)-free defaults (0, 1) for an empty channel.
    """
    idx = np.clip(np.rint(np.asarray(channel, np.float64).ravel() * (bins - 1)), 0, bins - 1).astype(np.int64)
    hist = np.bincount(idx, minlength=bins).astype(np.float64)
    count = hist.sum()
    low, high = 0.0, 1.0
    if count == 0:
        return low, high
    acc = 0.0
    for i in range(bins - 1):
        acc += hist[i]
        if abs(acc / count - bias) < abs((acc + hist[i + 1]) / count - bias):
            low = (i + 1) / (bins - 1)
            break
    acc = 0.0
    for i in range(bins - 1, 0, -1):
        acc += hist[i]
        if abs(acc / count - bias) < abs((acc + hist[i - 1]) / count - bias):
            high = (i - 1) / (bins - 1)
            break
    return low, high


def gimp_white_balance(display: np.ndarray, bias: float = GIMP_STRETCH_BIAS) -> np.ndarray:
    """GIMP's Auto White Balance on display sRGB values: a levels stretch per channel (gamma 1, clamped)."""
    out = np.empty_like(display, dtype=np.float32)
    for c in range(3):
        low, high = gimp_stretch_levels(display[..., c], bias)
        if high > low:
            out[..., c] = np.clip((display[..., c] - low) / (high - low), 0.0, 1.0)
        else:  # a flat channel: GIMP's levels would divide by zero; leave it as it is
            out[..., c] = display[..., c]
    return out


def stretch_contrast(display: np.ndarray) -> np.ndarray:
    """gegl:stretch-contrast with GIMP's defaults (keep colours, not perceptual): one min/max over all channels,
    found in linear light, stretched to [0, 1]. After :func:`gimp_white_balance` it is nearly always the identity
    (every channel already reaches 0 and 1); it is kept so the chain is the one a GIMP user clicks."""
    lin = srgb_to_linear(display)
    lo, hi = float(lin.min()), float(lin.max())
    if hi <= lo:
        return np.asarray(display, np.float32)
    return linear_to_srgb((lin - lo) / (hi - lo))


def gimp_auto(linear: np.ndarray) -> np.ndarray:
    """GIMP-like automatic correction of a linear image: sRGB-encode (what GIMP shows after import), Auto White
    Balance, Stretch Contrast."""
    display = identity(_check_linear(linear, "gimp_auto"))
    return stretch_contrast(gimp_white_balance(display))


# ---------------------------------------------------------------------------------------------------------------
# Histogram matching to the target set

MATCH_BINS = 4096


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    return np.clip((np.asarray(values, np.float64) * bins).astype(np.int64), 0, bins - 1)


def _channel_hist(values: np.ndarray, bins: int = MATCH_BINS) -> np.ndarray:
    return np.bincount(_bin_index(values, bins).ravel(), minlength=bins).astype(np.float64)


@dataclass
class HistogramMatcher:
    """Per-channel CDF matching in sRGB against the pooled histogram of a target set.

    ``fit(targets)`` pools every pixel of every target (display sRGB) per channel; calling the matcher on a linear
    image sRGB-encodes it and maps each channel value v to the target value whose CDF equals the input's CDF at v
    (both CDFs taken at bin middles, 4096 bins: finer than 8-bit data).
    """

    bins: int = MATCH_BINS
    target_hist: np.ndarray | None = field(default=None, repr=False)  # (3, bins) pooled counts

    def fit(self, targets: Sequence[np.ndarray]) -> "HistogramMatcher":
        if not targets:
            raise ValueError("histogram_match: the target set is empty")
        hist = np.zeros((3, self.bins))
        for t in targets:
            t = np.clip(np.asarray(t, np.float32), 0.0, 1.0)
            for c in range(3):
                hist[c] += _channel_hist(t[..., c], self.bins)
        self.target_hist = hist
        return self

    def __call__(self, linear: np.ndarray) -> np.ndarray:
        if self.target_hist is None:
            raise RuntimeError("histogram_match: call fit(targets) before matching")
        display = identity(_check_linear(linear, "histogram_match"))
        centres = (np.arange(self.bins) + 0.5) / self.bins
        out = np.empty_like(display)
        for c in range(3):
            src = _channel_hist(display[..., c], self.bins)
            # Mid-bin CDFs: a value's quantile is the share below its bin plus half its own bin.
            src_q = (np.cumsum(src) - 0.5 * src) / src.sum()
            tgt = self.target_hist[c]
            tgt_q = (np.cumsum(tgt) - 0.5 * tgt) / tgt.sum()
            nz = tgt > 0  # only populated bins: np.interp needs strictly increasing sample points
            mapping = np.interp(src_q, tgt_q[nz], centres[nz])
            # Each pixel takes its own bin's mapping: interpolating between bin centres would drag values towards
            # the next *populated* bin, far away where the input histogram is sparse (8-bit data, gradients).
            out[..., c] = mapping[_bin_index(display[..., c], self.bins)]
        return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# LibRaw


@lru_cache(maxsize=8)
def _gamma_segments(power: float, slope: float) -> tuple[float, float]:
    """(x0, a) of the curve ``y = slope * x`` for x < x0, ``(1 + a) x^power - a`` above, joined with a continuous
    value and derivative: the same family as dcraw/LibRaw's gamma_curve() (sRGB is (1/2.4, 12.92), BT.709 is
    (0.45, 4.5)). Solved by bisection on x0."""
    if slope <= 0:
        return 0.0, 0.0

    def excess(x0: float) -> float:
        # From slope continuity: 1 + a = slope x0^(1-p) / p; from value continuity: a = slope x0 (1/p - 1).
        return slope * x0 ** (1 - power) / power - 1 - slope * x0 * (1 / power - 1)

    lo, hi = 1e-12, 1.0 / slope
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(mid) > 0:
            hi = mid
        else:
            lo = mid
    x0 = 0.5 * (lo + hi)
    return x0, slope * x0 * (1 / power - 1)


def libraw_gamma(x: np.ndarray, gamma: tuple[float, float] = LIBRAW_GAMMA) -> np.ndarray:
    """LibRaw's output transfer curve on values in [0, 1]; ``gamma`` as rawpy takes it (default (2.222, 4.5):
    power 1/2.222 with a 4.5 linear toe)."""
    power, slope = 1.0 / gamma[0], float(gamma[1])
    x0, a = _gamma_segments(power, slope)
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x < x0, x * slope, (1 + a) * np.power(x, power) - a).astype(np.float32)


def libraw_auto_bright_white(linear: np.ndarray, thr: float = LIBRAW_AUTO_BRIGHT_THR) -> float:
    """The white point LibRaw's auto-bright picks: per channel the level above which ``thr`` of the pixels lie,
    the largest over the channels (so at most ``thr`` of any channel clips). Values are linear, 1 = full scale."""
    x = np.clip(np.asarray(linear, np.float32), 0.0, 1.0).reshape(-1, 3)
    white = max(float(np.quantile(x[:, c], 1.0 - thr)) for c in range(3))
    # LibRaw's histogram has 0x2000 bins of 16-bit values >> 3 and the white is a bin's lower edge (bin << 3).
    white = np.floor(white * 65535.0 / 8.0) * 8.0 / 65535.0
    return max(float(white), LIBRAW_MIN_WHITE)


def libraw_like(linear: np.ndarray, thr: float = LIBRAW_AUTO_BRIGHT_THR, bright: float = 1.0,
                bits: int = 8, gamma: tuple[float, float] = LIBRAW_GAMMA) -> np.ndarray:
    """LibRaw's default development applied to already-linear data (NOT LibRaw itself: no demosaic, no camera
    matrix, the white balance already in the data): auto-bright scaling, LibRaw's default gamma, 8-bit output."""
    x = _check_linear(linear, "libraw_like")
    white = libraw_auto_bright_white(x, thr) / bright
    out = libraw_gamma(x / white, gamma)
    if bits:
        # LibRaw's curve table holds 16-bit values and its 8-bit output is curve >> 8: a truncation.
        top = float(2 ** bits - 1)
        out = np.minimum(np.floor(out.astype(np.float64) * 2 ** bits), top) / top
    return out.astype(np.float32)


def libraw_default(path: str | os.PathLike, gamma: tuple[float, float] = LIBRAW_GAMMA) -> np.ndarray:
    """A RAW file developed by LibRaw (rawpy) with its defaults plus the camera's white balance: AHD demosaic,
    auto-bright (thr 0.01), sRGB primaries, gamma (2.222, 4.5) unless ``gamma`` says otherwise (``SRGB_GAMMA``
    for the sRGB curve), 8 bits. Returns display values in [0, 1]."""
    import rawpy

    try:
        with rawpy.imread(os.fspath(path)) as raw:
            rgb = raw.postprocess(use_camera_wb=True, gamma=tuple(gamma))
    except (rawpy.LibRawError, OSError) as e:
        raise ValueError(f"{path}: LibRaw cannot develop this file ({type(e).__name__}: {e})") from None
    return (rgb.astype(np.float32) / 255.0)


# ---------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class BaselineSpec:
    """A named baseline. ``make(targets)`` returns the linear -> display function (fitted where it needs targets)."""

    name: str
    title: str
    make: Callable[[Sequence[np.ndarray]], Callable[[np.ndarray], np.ndarray]]
    uses_targets: bool = False


BASELINES: dict[str, BaselineSpec] = {
    b.name: b
    for b in [
        BaselineSpec("identity", "Identity (sRGB-encoded input)", lambda targets: identity),
        BaselineSpec("gimp_auto", "GIMP Auto White Balance + Stretch Contrast", lambda targets: gimp_auto),
        BaselineSpec("histogram_match", "Histogram matching to the targets",
                     lambda targets: HistogramMatcher().fit(targets), uses_targets=True),
        BaselineSpec("libraw_like", "LibRaw-like development (auto-bright, default gamma) of linear data",
                     lambda targets: libraw_like),
    ]
}

