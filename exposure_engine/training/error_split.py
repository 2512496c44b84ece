"""Where a model's paired error on its held-out photos is: global brightness, colour balance, or the rest.

For each held-out photo (the RAW-like draws of :func:`.holdout.evaluate_holdout`), the model's mean edit is
corrected afterwards by per-channel gains on linear RGB, so that its channel means match the finished original's
in brightness only (log2 mean luminance), in chroma only (``log2 R/G`` and ``log2 B/G`` of the channel means, with
the luminance kept), or in both; the PSNR each correction reaches says what that error costs. What remains after
both is the shape of the edit (tone curve, contrast, local colour).

Then the question an unpaired learner must answer: can the right brightness (or chroma) be told from the input
alone? Each predictor below is scored by its error against the original (stops, or the sum of the two log2
chroma ratios' errors) and by the PSNR of the model's output rescaled to it:

* ``model``: what the model's output already has;
* ``quantile_map``: the brightness anchor's map (training/anchor.py): input quantile -> the same quantile of the
  targets, fitted on whole training inputs (one RAW-like draw each, the run's seed) and the target half;
* ``paired_affine``: the least-squares affine fit of the original's brightness on the input's, fitted on the
  training inputs *with their originals* (pairs an unpaired learner never has): what the best affine rule from
  the input's mean brightness could do;
* ``target_median``: one value for every photo, the target half's median;
* ``gray_world`` (chroma only): neutral channel means;
* ``model_and_map`` (chroma only): the mean of ``model`` and ``quantile_map``, as the level rule averages two
  readings of the level and of the contrast (docs/training.md: no better than ``model`` on the shipped model);
* ``white_point`` (brightness only): the output moved by the gain that puts its white level (:func:`log2_white`,
  the 99.5th percentile of linear luminance) at the targets' median white level;
* ``map_and_white_point``: the mean of ``quantile_map`` and ``white_point``, which is what the white-point anchor
  (recipe ``anchor_white_point``, training/anchor.py) asks of an output;
* ``paired_affine_white``: ``paired_affine`` on the input's brightness and white level together (pairs again):
  how much the white level adds to what an affine rule can know.

And the same for saturation (``saturation_predictors``: how colourful, not which colour): the statistic is
:func:`log2_saturation`, which no white-balance gain or exposure changes, and the correction scales each pixel's
chroma about its luminance (:func:`scale_chroma`) until the output has the predicted value; ``quantile_map`` is
that statistic's input-to-target quantile map. It answers whether a saturation anchor (the brightness anchor's
map applied to saturation) could help: only as much as ``saturation_corrected`` gains over ``model``.

And contrast (``contrast_predictors``): :func:`log2_contrast`, the spread of log2 luminance in stops, which
exposure leaves all but unchanged; the correction (:func:`scale_contrast`) raises each pixel's luminance ratio to
the image's geometric mean to a power, keeping its chroma; ``paired_affine`` is again fitted with the training
pairs. ``contrast_corrected`` (each output moved to its original's contrast) bounds what a contrast anchor could
give.

::

    python -m exposure_engine.training.error_split models/default /work/shared/photos --draws 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import filters as F
from ..agent.level import CONTRAST_EPS
from ..agent.level import log2_contrast as level_log2_contrast, log2_white as level_log2_white
from ..imageio.transfer import linear_to_srgb, srgb_to_linear
from .anchor import BrightnessAnchor
from .holdout import EVAL_SEED, load_with_split, print_json, raw_like_draw

_LUM = np.array([F.LUM_R, F.LUM_G, F.LUM_B], np.float64)
_FLOOR = 1e-6


def channel_means(linear: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` linear RGB -> ``(3,)`` channel means."""
    return linear.reshape(-1, 3).mean(0).astype(np.float64)


def log2_brightness(means: np.ndarray) -> float:
    """log2 mean linear luminance of channel means ``(3,)``."""
    return float(np.log2(max(float(_LUM @ means), _FLOOR)))


def log2_white(linear: np.ndarray) -> float:
    """``(H,W,3)`` linear RGB -> log2 white level: the 99.5th percentile of luminance (values clipped to [0, 1]), as
    the white-point anchor and the level rule read it (``agent.level.log2_white``)."""
    return float(level_log2_white(np.asarray(linear)[None])[0])


def log2_chroma(means: np.ndarray) -> np.ndarray:
    """``(3,)`` channel means -> ``(2,)`` ``log2 R/G, log2 B/G``."""
    m = np.maximum(means, _FLOOR)
    return np.log2(m[[0, 2]] / m[1])


def gains_to(means: np.ndarray, *, brightness: float | None = None, chroma: np.ndarray | None = None) -> np.ndarray:
    """Per-channel linear gains ``(3,)`` that move channel means ``means`` to log2 chroma ``chroma`` and log2
    brightness ``brightness`` (``None``: keep the image's own)."""
    g = np.ones(3)
    if chroma is not None:
        d = np.asarray(chroma, np.float64) - log2_chroma(means)
        g = np.array([2.0 ** d[0], 1.0, 2.0 ** d[1]])
    target = log2_brightness(means) if brightness is None else brightness
    return g * 2.0 ** (target - log2_brightness(means * g))


def apply_gains(srgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Display sRGB ``(H,W,3)`` -> the same with its linear channels multiplied by ``gains``, clipped to [0, 1]."""
    return linear_to_srgb(srgb_to_linear(srgb) * gains, clip=True)


def log2_saturation(linear: np.ndarray) -> float:
    """``(H,W,3)`` linear RGB -> log2 of the mean HSV saturation ``(max - min) / max`` after dividing each channel
    by its mean: unchanged by any per-channel gain (white balance, exposure), so it measures colourfulness alone."""
    x = np.asarray(linear, np.float64).reshape(-1, 3)
    x = x / np.maximum(x.mean(0), _FLOOR)
    mx = x.max(1)
    return float(np.log2(max(float(np.mean((mx - x.min(1)) / np.maximum(mx, _FLOOR))), 1e-3)))


def scale_chroma(srgb: np.ndarray, factor: float) -> np.ndarray:
    """Display sRGB -> the same with each linear pixel's distance from its luminance times ``factor`` (clipped)."""
    lin = srgb_to_linear(srgb)
    lum = (lin @ _LUM.astype(np.float32))[..., None]
    return linear_to_srgb(lum + np.float32(factor) * (lin - lum), clip=True)


def log2_contrast(linear: np.ndarray) -> float:
    """``(H,W,3)`` linear RGB -> the level rule's contrast (:func:`exposure_engine.agent.level.log2_contrast`)."""
    return float(level_log2_contrast(np.asarray(linear)[None])[0])


def scale_contrast(srgb: np.ndarray, factor: float) -> np.ndarray:
    """Display sRGB -> the same with each linear pixel's ``luminance + CONTRAST_EPS`` ratio to the image's
    geometric mean raised to ``factor`` (every channel scaled alike, so chroma ratios stay; clipped)."""
    lin = srgb_to_linear(srgb)
    lum = np.maximum(lin @ _LUM.astype(np.float32), 0.0) + np.float32(CONTRAST_EPS)
    mean = np.float32(np.exp(np.log(lum).mean()))
    return linear_to_srgb(lin * ((mean * (lum / mean) ** np.float32(factor)) / lum)[..., None], clip=True)


def _factor_to(srgb: np.ndarray, target: float, statistic, transform, lo: float, hi: float, side: int,
               steps: int) -> float:
    """The ``transform(srgb, factor)`` factor in [lo, hi] that gives ``statistic`` (of the linear result) the value
    ``target``, by bisection on a ``side``-px reduction (the statistic rises with the factor)."""
    import cv2

    h, w = srgb.shape[:2]
    s = min(1.0, side / max(h, w))
    small = cv2.resize(np.ascontiguousarray(srgb, np.float32), (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if statistic(srgb_to_linear(transform(small, mid))) < target else (lo, mid)
    return 0.5 * (lo + hi)


def chroma_factor_to(srgb: np.ndarray, target: float, *, side: int = 128, steps: int = 16) -> float:
    """The :func:`scale_chroma` factor in [0, 4] that gives ``srgb`` the :func:`log2_saturation` ``target``."""
    return _factor_to(srgb, target, log2_saturation, scale_chroma, 0.0, 4.0, side, steps)


def contrast_factor_to(srgb: np.ndarray, target: float, *, side: int = 128, steps: int = 16) -> float:
    """The :func:`scale_contrast` factor in [0.25, 4] that gives ``srgb`` the :func:`log2_contrast` ``target``."""
    return _factor_to(srgb, target, log2_contrast, scale_contrast, 0.25, 4.0, side, steps)


def error_split(model: str | Path, photos: str | Path, *, draws: int = 2, seed: int = EVAL_SEED) -> dict:
    """The study of the module docstring on ``draws`` RAW-like draws of the held-out photos (draw k: unprocess seed
    ``seed + k``, as ``evaluate_holdout``). Returns mean PSNRs (dB) and errors (stops; chroma: sum of both ratios'
    errors in stops)."""
    from ..evaluation import metrics as M
    from ..imageio.proxy import make_proxy
    from ..renderer import render
    from . import data as D

    pol, training, split = load_with_split(model)
    photos = Path(photos)
    train_orig = [D.read_photo_srgb(photos / n) for n in split["train_inputs"]]
    train_in = raw_like_draw(train_orig, int(training.get("seed", 0)))
    m_in = [channel_means(x) for x in train_in]
    m_tg, s_tg, k_tg, w_tg = [], [], [], []
    for n in split["targets"]:  # each target decoded once (they are full-size photos)
        lin = srgb_to_linear(D.read_photo_srgb(photos / n))
        m_tg.append(channel_means(lin))
        w_tg.append(log2_white(lin))
        s_tg.append(log2_saturation(lin))
        k_tg.append(log2_contrast(lin))
    b_in = np.array([log2_brightness(m) for m in m_in])
    b_tg = np.array([log2_brightness(m) for m in m_tg])
    lin_orig = [srgb_to_linear(y) for y in train_orig]
    b_orig = np.array([log2_brightness(channel_means(y)) for y in lin_orig])
    k_in, k_train = np.array([log2_contrast(x) for x in train_in]), np.array([log2_contrast(y) for y in lin_orig])
    del lin_orig
    c_in, c_tg = np.array([log2_chroma(m) for m in m_in]), np.array([log2_chroma(m) for m in m_tg])
    s_map = BrightnessAnchor.from_values([log2_saturation(x) for x in train_in], s_tg)
    # the brightness anchor's quantile map, and the same 1-D map for each log2 chroma ratio
    b_map = BrightnessAnchor.from_values(b_in, b_tg)
    c_map = [BrightnessAnchor.from_values(c_in[:, k], c_tg[:, k]) for k in (0, 1)]
    k_map = BrightnessAnchor.from_values(k_in, k_tg)
    affine, k_affine = np.polyfit(b_in, b_orig, 1), np.polyfit(k_in, k_train, 1)
    w_in = np.array([log2_white(x) for x in train_in])
    affine_w = np.linalg.lstsq(np.c_[b_in, w_in, np.ones(len(b_in))], b_orig, rcond=None)[0]
    b_med, c_med, s_med = float(np.median(b_tg)), np.median(c_tg, 0), float(np.median(s_tg))
    w_med = float(np.median(w_tg))
    k_med = float(np.median(k_tg))

    psnr = {k: [] for k in ("model", "brightness_corrected", "chroma_corrected", "both_corrected",
                            "saturation_corrected", "contrast_corrected")}
    b_pred = {k: {"error": [], "psnr": []} for k in ("model", "quantile_map", "paired_affine", "target_median",
                                                      "white_point", "map_and_white_point", "paired_affine_white")}
    c_pred = {k: {"error": [], "psnr": []} for k in ("model", "quantile_map", "model_and_map", "target_median",
                                                      "gray_world")}
    s_pred = {k: {"error": [], "psnr": []} for k in ("model", "quantile_map", "target_median")}
    k_pred = {k: {"error": [], "psnr": []} for k in ("model", "quantile_map", "paired_affine", "target_median")}
    names = split["holdout_inputs"]
    originals = [D.read_photo_srgb(photos / n) for n in names]
    m_orig, s_orig, k_orig = [], [], []
    for y in originals:  # one linear copy at a time
        lin = srgb_to_linear(y)
        m_orig.append(channel_means(lin))
        s_orig.append(log2_saturation(lin))
        k_orig.append(log2_contrast(lin))
    for draw in range(max(1, draws)):
        for srgb, mg, sg, kg, x in zip(originals, m_orig, s_orig, k_orig, raw_like_draw(originals, seed + draw)):
            out = render(x, pol.predict(make_proxy(x, 64))[0].sequence)
            lin_out = srgb_to_linear(out)
            mo, mx = channel_means(lin_out), channel_means(x)
            bg, cg = log2_brightness(mg), log2_chroma(mg)
            psnr["model"].append(M.psnr(out, srgb))
            psnr["brightness_corrected"].append(M.psnr(apply_gains(out, gains_to(mo, brightness=bg)), srgb))
            psnr["chroma_corrected"].append(M.psnr(apply_gains(out, gains_to(mo, chroma=cg)), srgb))
            psnr["both_corrected"].append(M.psnr(apply_gains(out, gains_to(mo, brightness=bg, chroma=cg)), srgb))
            bx, cx = log2_brightness(mx), log2_chroma(mx)
            b_out, b_mapped = log2_brightness(mo), float(b_map.of_log2(bx))
            b_white = b_out + w_med - log2_white(lin_out)  # the output's white level put at w_med
            for k, b in (("model", b_out), ("quantile_map", b_mapped),
                         ("paired_affine", float(np.polyval(affine, bx))), ("target_median", b_med),
                         ("white_point", b_white), ("map_and_white_point", 0.5 * (b_mapped + b_white)),
                         ("paired_affine_white", float(affine_w @ [bx, log2_white(x), 1.0]))):
                b_pred[k]["error"].append(abs(b - bg))
                b_pred[k]["psnr"].append(M.psnr(apply_gains(out, gains_to(mo, brightness=b)), srgb))
            c_mapped = np.array([m.of_log2(v) for m, v in zip(c_map, cx)])
            for k, c in (("model", log2_chroma(mo)), ("quantile_map", c_mapped),
                         ("model_and_map", 0.5 * (log2_chroma(mo) + c_mapped)),
                         ("target_median", c_med), ("gray_world", np.zeros(2))):
                c_pred[k]["error"].append(float(np.abs(c - cg).sum()))
                c_pred[k]["psnr"].append(M.psnr(apply_gains(out, gains_to(mo, chroma=c)), srgb))
            psnr["saturation_corrected"].append(M.psnr(scale_chroma(out, chroma_factor_to(out, sg)), srgb))
            for k, v in (("model", log2_saturation(lin_out)),
                         ("quantile_map", float(s_map.of_log2(log2_saturation(x)))), ("target_median", s_med)):
                s_pred[k]["error"].append(abs(v - sg))
                s_pred[k]["psnr"].append(psnr["model"][-1] if k == "model" else
                                         M.psnr(scale_chroma(out, chroma_factor_to(out, v)), srgb))
            psnr["contrast_corrected"].append(M.psnr(scale_contrast(out, contrast_factor_to(out, kg)), srgb))
            kx = log2_contrast(x)
            for k, v in (("model", log2_contrast(lin_out)), ("quantile_map", float(k_map.of_log2(kx))),
                         ("paired_affine", float(np.polyval(k_affine, kx))), ("target_median", k_med)):
                k_pred[k]["error"].append(abs(v - kg))
                k_pred[k]["psnr"].append(psnr["model"][-1] if k == "model" else
                                         M.psnr(scale_contrast(out, contrast_factor_to(out, v)), srgb))

    def mean(v):
        return round(float(np.mean(v)), 3)

    def scored(pred):  # each predictor's mean error and the mean PSNR of the outputs moved to it
        return {k: {"error_stops": mean(v["error"]), "psnr": mean(v["psnr"])} for k, v in pred.items()}

    def fitted(fit, x, y):  # a paired affine rule y ~ fit(x), with the correlation it rests on
        return {"slope": round(float(fit[0]), 3), "intercept": round(float(fit[1]), 3),
                "corr": round(float(np.corrcoef(x, y)[0, 1]), 3)}

    return {"model": pol.name, "sha256": pol.content_hash, "n_photos": len(names), "draws": max(1, draws),
            "unprocess_seed": seed,
            "psnr": {k: mean(v) for k, v in psnr.items()},
            "brightness_predictors": scored(b_pred), "chroma_predictors": scored(c_pred),
            "saturation_predictors": scored(s_pred), "contrast_predictors": scored(k_pred),
            "paired_affine": fitted(affine, b_in, b_orig),
            "paired_affine_white": {"brightness": round(float(affine_w[0]), 3), "white": round(float(affine_w[1]), 3),
                                    "intercept": round(float(affine_w[2]), 3)},
            "target_white_level": round(w_med, 3), "contrast_paired_affine": fitted(k_affine, k_in, k_train)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exposure_engine.training.error_split",
                                description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("photos", help="the folder the model's split was drawn from")
    p.add_argument("--draws", type=int, default=2, help="RAW-like versions of each held-out photo (default 2)")
    p.add_argument("--json", help="write the result here too")
    a = p.parse_args(argv)
    print_json(error_split(a.model, a.photos, draws=a.draws), a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
