"""Make RAW-like linear inputs from finished photos ("unprocessing", Brooks et al., CVPR 2019).

A finished JPEG has a tone curve, the sRGB transfer curve, a neutral white balance, boosted saturation and a
bright exposure. A camera RAW developed linearly (rawpy with camera white balance, no auto-brightening,
gamma 1) is the opposite: flat, dark, a little off in colour. :func:`unprocess` undoes a photo's processing in
the order Brooks et al. invert it, with randomised amounts so that the agent sees the range of looks a real
RAW has:

1. inverse smoothstep tone curve (on the display-encoded values): ``x = 0.5 - sin(asin(1 - 2y) / 3)``;
2. inverse sRGB transfer curve (exact piecewise sRGB, not a 2.2 power);
3. desaturation towards the paper's luminance by a random factor;
4. a random white-balance cast (R and B gains, luminance preserved);
5. a random exposure change (darker, in EV).

The default ranges were chosen by comparing the statistics of unprocessed photos with those of a real Canon
CR2 decoded linearly (docs/training.md has the table and the command that reproduces it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..filters import LUM
from ..imageio.transfer import srgb_to_linear


def smoothstep(x: np.ndarray) -> np.ndarray:
    return (3 * x * x - 2 * x * x * x).astype(np.float32)


def inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    """Inverse of ``3x^2 - 2x^3`` on [0, 1] (Brooks et al., Eq. 2)."""
    y = np.clip(np.asarray(y, np.float32), 0.0, 1.0)
    return (0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)).astype(np.float32)


@dataclass(frozen=True)
class UnprocessParams:
    ev: float = -1.5  # exposure change in stops (negative: darker)
    saturation: float = 0.8  # 1 keeps the colours, 0 is grey
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white-balance cast, lum(gains) = 1
    tone: bool = True  # undo a smoothstep tone curve

    def to_dict(self) -> dict:
        return {**asdict(self), "gains": [float(g) for g in self.gains]}


@dataclass(frozen=True)
class UnprocessRanges:
    """Where :func:`random_params` draws from (uniformly; gains log-uniformly)."""

    ev: tuple[float, float] = (-2.5, -0.5)
    saturation: tuple[float, float] = (0.6, 1.0)
    cast: float = 0.2  # R and B gains each in [1/(1+cast), 1+cast] before luminance normalisation

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "UnprocessRanges":
        """The inverse of :meth:`to_dict` (as a model's config.json records ``training.unprocess_ranges``)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def random_gains(rng: np.random.Generator, cast: float, n: int) -> np.ndarray:
    """``(n, 3)`` white-balance casts: R and B gains log-uniform in [1/(1+cast), 1+cast] relative to G, each row
    scaled to unit luminance (a grey keeps its brightness)."""
    lr = np.log1p(cast)
    rb = np.exp(rng.uniform(-lr, lr, (n, 2)))
    g = np.stack([rb[:, 0], np.ones(n), rb[:, 1]], 1)
    return g / (g @ LUM.astype(np.float64))[:, None]


def random_params(rng: np.random.Generator, ranges: UnprocessRanges = UnprocessRanges()) -> UnprocessParams:
    ev = float(rng.uniform(*ranges.ev))
    sat = float(rng.uniform(*ranges.saturation))
    g = random_gains(rng, ranges.cast, 1)[0]
    return UnprocessParams(ev=ev, saturation=sat, gains=(float(g[0]), float(g[1]), float(g[2])))


def unprocess(srgb: np.ndarray, params: UnprocessParams) -> np.ndarray:
    """A finished photo ``(H, W, 3)`` float in [0, 1] (display-encoded sRGB) -> RAW-like linear float32 RGB.

    Values stay >= 0; they may exceed 1 only if ``params.ev`` > 0."""
    if srgb.ndim != 3 or srgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {srgb.shape}")
    y = np.asarray(srgb, np.float32)
    if params.tone:
        y = inverse_smoothstep(y)
    x = srgb_to_linear(y)
    L = x @ LUM
    x = L[..., None] + np.float32(params.saturation) * (x - L[..., None])
    x = np.maximum(x, 0.0)  # desaturating can never go negative, but float rounding at 0 can
    x = x * np.asarray(params.gains, np.float32) * np.float32(2.0 ** params.ev)
    return x.astype(np.float32)


@dataclass(frozen=True)
class Jitter:
    """A fresh random change of exposure, white balance and saturation on every training sample of a linear input
    (recipe ``input_jitter``; not in the paper). :func:`unprocess` draws one look per file, so 78 photos are 78
    exposures and 78 casts however long a run trains; this redraws a nearby look each time a crop is taken, for
    unprocessed photos and real RAWs alike."""

    ev: float = 0.0  # exposure change, uniform in [-ev, +ev] stops
    cast: float = 0.0  # R and B gains each in [1/(1+cast), 1+cast] (log-uniform), luminance kept
    saturation: float = 0.0  # chroma scaled by a factor uniform in [1 - saturation, 1 + saturation]

    def __post_init__(self):
        if not (self.ev >= 0 and self.cast >= 0 and 0 <= self.saturation < 1):
            raise ValueError(f"input_jitter needs ev >= 0, cast >= 0 and 0 <= saturation < 1, not {self}")

    def __bool__(self) -> bool:
        return bool(self.ev or self.cast or self.saturation)

    def __call__(self, x, rng: np.random.Generator):
        """``(B, 3, H, W)`` linear float tensor -> the same shape, each image with its own draw; values clipped to
        [0, 1] as a sensor clips (an input brightened past its white level loses those highlights)."""
        import torch

        b = x.shape[0]
        e = rng.uniform(-self.ev, self.ev, b)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation, b)
        g = random_gains(rng, self.cast, b)
        scale = torch.from_numpy((g * 2.0 ** e[:, None]).astype(np.float32))[:, :, None, None]
        sat = torch.from_numpy(s.astype(np.float32))[:, None, None, None]
        lum = torch.einsum("bchw,c->bhw", x, torch.from_numpy(LUM))[:, None]
        return ((lum + sat * (x - lum)).clamp_min(0.0) * scale).clamp(0.0, 1.0)


def linear_stats(img: np.ndarray) -> dict:
    """Summary statistics of a linear image used to compare synthetic inputs with a real RAW:
    mean and percentiles of luminance, R/G and B/G mean ratios, mean HSV saturation."""
    x = np.asarray(img, np.float32).reshape(-1, 3)
    L = x @ LUM
    mx, mn = x.max(1), x.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-8), 0.0)
    p = np.percentile(L, [1, 50, 99])
    m = x.mean(0)
    return {"mean_lum": float(L.mean()), "p1": float(p[0]), "p50": float(p[1]), "p99": float(p[2]),
            "r_over_g": float(m[0] / max(m[1], 1e-8)), "b_over_g": float(m[2] / max(m[1], 1e-8)),
            "saturation": float(sat.mean())}


def compare_with_raw(raw_path: str, photos_dir: str, *, every: int = 4, seed: int = 0) -> dict:
    """Statistics of a real RAW decoded linearly (half size) next to the median and 10th-90th percentiles of
    unprocessed photos (every ``every``-th file of ``photos_dir``, 256 px wide), and of the same photos only
    linearised. The basis of the default :class:`UnprocessRanges` (docs/training.md)."""
    from pathlib import Path

    import cv2

    from ..imageio.raw import load_raw

    raw = linear_stats(load_raw(raw_path, half_size=True).pixels)
    files = sorted(p for p in Path(photos_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::every]
    rng = np.random.default_rng(seed)
    unproc, lin = [], []
    for f in files:
        im = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if im is None:
            continue
        im = im[..., ::-1].astype(np.float32) / 255
        im = cv2.resize(im, (256, max(1, round(256 * im.shape[0] / im.shape[1]))), interpolation=cv2.INTER_AREA)
        lin.append(linear_stats(srgb_to_linear(im)))
        unproc.append(linear_stats(unprocess(im, random_params(rng))))

    def summary(rows):
        return {k: [round(float(np.percentile([r[k] for r in rows], q)), 4) for q in (50, 10, 90)] for k in rows[0]}

    return {"raw": {k: round(v, 4) for k, v in raw.items()}, "n_photos": len(unproc),
            "unprocessed_median_p10_p90": summary(unproc), "linearised_median_p10_p90": summary(lin)}


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m exposure_engine.training.unprocess RAW_FILE PHOTOS_DIR")
    print(json.dumps(compare_with_raw(sys.argv[1], sys.argv[2]), indent=1))
