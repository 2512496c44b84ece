"""Quality metrics: the paper's histogram intersection (set level) and paired PSNR / CIE76 dE.

Every function takes display-encoded sRGB images: ``(H, W, 3)`` float arrays, nominally in [0, 1] (values outside
are clipped first, as a display would).

Histogram intersection (Hu et al. 2018, Tables 2-4; procedure as measured against the reference code, see
/work/shared/notes/exposure-method.md and docs/evaluation.md):

1. per image, 4 random square crops with side = the shorter edge, each resized to 80x80 with ``cv2.INTER_AREA``,
   then 4 random 64x64 crops of each (offsets 0..15): 16 patches per image;
2. per patch (clipped to [0, 1]): luminance = mean of ``0.27 R + 0.67 G + 0.06 B``; contrast = 2 * std of that
   luminance; saturation = mean HLS saturation;
3. per statistic, a 32-bin histogram on [0, 1] of all patches of a set, divided by the number of patches;
   score = sum over bins of min(a, b) between the two sets (1 = identical distributions, 0 = disjoint).

The crops come from ``numpy.random.default_rng(seed)`` restarted for each set, so a set compared with itself
(or with a same-sized set) samples the same places: identical sets score exactly 100 %.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..filters import LUM_B, LUM_G, LUM_R
from .colour import srgb_to_lab

N_BINS = 32
CROPS_PER_IMAGE = 4
CROP_RESIZE = 80
PATCH = 64
PATCHES_PER_CROP = 4
STAT_NAMES = ("luminance", "contrast", "saturation")


def _check_image(img: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{where}: expected an (H, W, 3) array, got {getattr(img, 'shape', type(img).__name__)}")
    if img.dtype.kind != "f":
        raise ValueError(f"{where}: expected float pixels in [0, 1], got {img.dtype}")
    if min(img.shape[:2]) < 1:
        raise ValueError(f"{where}: empty image {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError(f"{where}: has NaN or infinite pixels")
    return img


# ---------------------------------------------------------------------------------------------------------------
# Patch sampling and statistics


def sample_patches(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 16 patches of one image: ``(H, W, 3)`` -> ``(16, 64, 64, 3)`` float32, clipped to [0, 1].

    Images whose shorter edge is under 80 px are upsampled by the 80x80 resize (INTER_AREA falls back to
    bilinear), as the reference code's resize would.
    """
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    out = np.empty((CROPS_PER_IMAGE * PATCHES_PER_CROP, PATCH, PATCH, 3), np.float32)
    k = 0
    for _ in range(CROPS_PER_IMAGE):
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = cv2.resize(np.ascontiguousarray(img[y:y + side, x:x + side]), (CROP_RESIZE, CROP_RESIZE),
                          interpolation=cv2.INTER_AREA)
        for _ in range(PATCHES_PER_CROP):
            # Offsets 0..15 (the reference code's exclusive upper bound 80 - 64), not 0..16.
            dy = int(rng.integers(0, CROP_RESIZE - PATCH))
            dx = int(rng.integers(0, CROP_RESIZE - PATCH))
            out[k] = crop[dy:dy + PATCH, dx:dx + PATCH]
            k += 1
    return np.clip(out, 0.0, 1.0)  # INTER_AREA of values in [0, 1] stays there, up to rounding


def hls_saturation(rgb: np.ndarray) -> np.ndarray:
    """HLS saturation of ``(..., 3)`` values in [0, 1] -> ``(...)``, as :func:`colorsys.rgb_to_hls` defines it:
    (max - min) / (max + min) when lightness <= 0.5, else (max - min) / (2 - max - min); 0 for greys.
    (Only S is needed per patch; this skips the hue arithmetic of :func:`.colour.rgb_to_hls`.)"""
    mx = rgb.max(axis=-1).astype(np.float64)
    mn = rgb.min(axis=-1).astype(np.float64)
    chroma = mx - mn
    total = mx + mn
    denom = np.where(total <= 1.0, total, 2.0 - total)
    safe = np.where(chroma > 0, denom, 1.0)
    return np.where(chroma > 0, chroma / safe, 0.0)


def patch_statistics(patches: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` patches in [0, 1] -> ``(N, 3)`` float64: mean luminance, 2 * std of luminance (population
    std), mean HLS saturation."""
    p = np.asarray(patches, np.float64)
    lum = LUM_R * p[..., 0] + LUM_G * p[..., 1] + LUM_B * p[..., 2]
    flat = lum.reshape(len(p), -1)
    sat = hls_saturation(p).reshape(len(p), -1)
    return np.stack([flat.mean(axis=1), 2.0 * flat.std(axis=1), sat.mean(axis=1)], axis=1)


def set_statistics(images: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """Statistics of every patch of a set: ``len(images) * 16`` rows of (luminance, contrast, saturation)."""
    if len(images) == 0:
        raise ValueError("an image set is empty: the histogram intersection needs at least one image per set")
    rng = np.random.default_rng(seed)
    rows = [patch_statistics(sample_patches(_check_image(img, f"image {i}"), rng)) for i, img in enumerate(images)]
    return np.concatenate(rows, axis=0)


def normalised_histogram(values: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """32-bin histogram on [0, 1] divided by the number of values (sums to 1). 1.0 falls in the last bin."""
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    counts, _ = np.histogram(v, bins=bins, range=(0.0, 1.0))
    return counts / max(len(v), 1)


def intersection(a: np.ndarray, b: np.ndarray) -> float:
    """sum(min(a, b)) of two normalised histograms: 1 for identical, 0 for disjoint."""
    return float(np.minimum(a, b).sum())


@dataclass(frozen=True)
class HistogramScores:
    """Histogram intersection in percent per statistic, and their mean."""

    luminance: float
    contrast: float
    saturation: float

    @property
    def mean(self) -> float:
        return (self.luminance + self.contrast + self.saturation) / 3.0

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean}


def intersection_from_statistics(stats_a: np.ndarray, stats_b: np.ndarray) -> HistogramScores:
    """Scores from two ``(N, 3)`` statistic tables (:func:`set_statistics`); lets one target set be sampled once."""
    scores = [100.0 * intersection(normalised_histogram(stats_a[:, k]), normalised_histogram(stats_b[:, k]))
              for k in range(3)]
    return HistogramScores(*scores)


PATCHES_PER_IMAGE = CROPS_PER_IMAGE * PATCHES_PER_CROP


def _image_histograms(stats: np.ndarray) -> np.ndarray:
    """``(n_images * 16, 3)`` statistics -> ``(n_images, 3, 32)`` per-image bin counts."""
    n = len(stats) // PATCHES_PER_IMAGE
    idx = np.clip((np.clip(stats, 0.0, 1.0) * N_BINS).astype(np.int64), 0, N_BINS - 1)
    idx = idx[: n * PATCHES_PER_IMAGE].reshape(n, PATCHES_PER_IMAGE, 3)
    counts = np.zeros((n, 3, N_BINS))
    for k in range(3):
        np.add.at(counts[:, k], (np.arange(n)[:, None], idx[:, :, k]), 1.0)
    return counts


def bootstrap_spread(stats_a: np.ndarray, stats_b: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """Standard deviation (percentage points) of each score when both sets' *images* are resampled with
    replacement: how much of a difference between two methods the set sizes can explain.

    stats_*: :func:`set_statistics` tables (16 consecutive rows per image). Returns {luminance, contrast,
    saturation, mean} standard deviations.
    """
    ha, hb = _image_histograms(stats_a), _image_histograms(stats_b)
    rng = np.random.default_rng(seed)
    scores = np.empty((n_boot, 4))
    for i in range(n_boot):
        a = ha[rng.integers(0, len(ha), len(ha))].sum(axis=0)
        b = hb[rng.integers(0, len(hb), len(hb))].sum(axis=0)
        a /= a.sum(axis=1, keepdims=True)
        b /= b.sum(axis=1, keepdims=True)
        per = 100.0 * np.minimum(a, b).sum(axis=1)
        scores[i, :3] = per
        scores[i, 3] = per.mean()
    sd = scores.std(axis=0, ddof=1)
    return {"luminance": float(sd[0]), "contrast": float(sd[1]), "saturation": float(sd[2]), "mean": float(sd[3])}


def histogram_intersection(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                           seed: int = 0) -> HistogramScores:
    """The paper's set-level score of ``outputs`` against ``targets`` (lists of display sRGB images)."""
    return intersection_from_statistics(set_statistics(outputs, seed), set_statistics(targets, seed))


# ---------------------------------------------------------------------------------------------------------------
# Paired metrics


def _pair(a: np.ndarray, b: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    _check_image(a, f"{where} (output)")
    _check_image(b, f"{where} (reference)")
    if a.shape != b.shape:
        raise ValueError(f"{where}: output is {a.shape[1]}x{a.shape[0]} but the reference is "
                         f"{b.shape[1]}x{b.shape[0]}; paired metrics need the same size")
    return (np.clip(np.asarray(a, np.float64), 0.0, 1.0), np.clip(np.asarray(b, np.float64), 0.0, 1.0))


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two display sRGB images in [0, 1]: 10 log10(1 / MSE) over all pixels and channels.
    ``inf`` for identical images."""
    a, b = _pair(output, reference, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def delta_e76(output: np.ndarray, reference: np.ndarray) -> float:
    """Mean CIE76 colour difference (Euclidean distance in CIELAB D65) over the pixels of two display sRGB images."""
    a, b = _pair(output, reference, "delta_e76")
    return float(np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b), axis=-1).mean())


@dataclass(frozen=True)
class PairedScores:
    """Means over image pairs; ``psnr`` is the mean of per-image PSNRs (the FiveK papers' convention)."""

    psnr: float
    delta_e: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired_metrics(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> PairedScores:
    """Mean PSNR (dB) and mean CIE76 dE of ``outputs[i]`` against ``references[i]``."""
    if len(outputs) != len(references):
        raise ValueError(f"paired metrics need as many outputs ({len(outputs)}) as references ({len(references)})")
    if not outputs:
        raise ValueError("paired metrics need at least one image pair")
    ps, des = [], []
    for i, (o, r) in enumerate(zip(outputs, references)):
        a, b = _pair(o, r, f"pair {i}")
        mse = float(np.mean((a - b) ** 2))
        ps.append(math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse))
        des.append(float(np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b), axis=-1).mean()))
    return PairedScores(float(np.mean(ps)), float(np.mean(des)), len(ps))
