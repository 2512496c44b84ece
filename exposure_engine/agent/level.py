"""The level rule: the program's exposure retuned so that the finished photo's level follows two unpaired readings.

Not in the paper. The policy's largest error on held-out photos is global brightness (docs/evaluation.md, "Where the
paired error is"): nothing in the unpaired objective tells it how bright a given photo should end up. Two readings
of that, both from the unpaired sets alone (training/error_split.py scores them against the originals):

* the brightness map: the input's log2 mean luminance mapped by the quantile map of input to target brightness
  (the brightness anchor's :class:`~exposure_engine.training.anchor.BrightnessAnchor`);
* the targets' white level: the median over the target photos of log2 of the 99.5th percentile of luminance
  (finished photos place their highlights more alike than their mean brightness).

The rule asks that the output's *level*, the mean of its log2 brightness and its log2 white level, equal the mean
of the two readings. :meth:`LevelRule.offsets` finds the one exposure gain in front of the program that meets it,
by a safeguarded secant search on the 64x64 proxy the policy decided on (the white level is read at that
resolution on both sides: ``white_level`` is measured on the targets' 64x64 whole-frame proxies).
:func:`with_gain` puts the gain into the program's first step when that is an Exposure step, else a new Exposure
step goes in front, so the program stays a white-box sequence of ordinary edits. Measured: docs/training.md,
"The level rule".

Shapes: proxies ``(N, h, w, 3)`` float32 linear RGB; states after a program are display-encoded sRGB (unclipped;
read as the renderer's clipped output is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import filters as F
from ..renderer import prepared_constants, programs_batch
from ..training.anchor import WHITE_QUANTILE, BrightnessAnchor
from ..training.unprocess import srgb_to_linear

_LUM = np.array([F.LUM_R, F.LUM_G, F.LUM_B], np.float32)
_EXPOSURE = F.get("exposure")  # the registry's entry (F.EXPOSURE itself has no index)
_FLOOR = 1e-6  # luminance floor, as the anchor's: a black image has level log2(1e-6), not -inf
SEARCH_EV = 3.0  # the gain is searched within +-3 stops
TOLERANCE = 0.001  # stops: the level met to this (a stop's thousandth: no visible difference)
MAX_ROUNDS = 30  # secant/bisection rounds at most (bisection alone: 6 stops to 1e-4 in 16)
MIN_OFFSET_EV = 0.005  # smaller gains are left out (no step added for nothing)


def log2_brightness(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N,)`` log2 mean luminance (values clipped to [0, 1], as the brightness
    anchor reads inputs)."""
    lum = np.clip(linear, 0.0, 1.0).reshape(len(linear), -1, 3) @ _LUM
    return np.log2(np.maximum(lum.mean(1, dtype=np.float64), _FLOOR))


def log2_white(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N,)`` log2 white level: the 99.5th percentile of luminance (values clipped
    to [0, 1]; linear interpolation between the two order statistics around it, as ``np.quantile`` and
    ``torch.quantile`` do, by a partial sort: np.quantile's own overhead was a third of the level rule's time)."""
    lum = np.clip(linear, 0.0, 1.0).reshape(len(linear), -1, 3) @ _LUM
    pos = WHITE_QUANTILE * (lum.shape[1] - 1)
    k = min(int(pos), lum.shape[1] - 2) if lum.shape[1] > 1 else 0
    part = np.partition(lum, (k, k + 1), axis=1) if lum.shape[1] > 1 else np.concatenate([lum, lum], 1)
    q = part[:, k].astype(np.float64) + (pos - k) * (part[:, k + 1].astype(np.float64) - part[:, k])
    return np.log2(np.maximum(q, _FLOOR))


def display_level(display: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` display-encoded sRGB -> ``(N,)`` level: mean of log2 brightness and log2 white level."""
    lin = srgb_to_linear(display)  # clipped to [0, 1] first, as the renderer's output is
    return 0.5 * (log2_brightness(lin) + log2_white(lin))


@dataclass(frozen=True)
class LevelRule:
    """What level each input's output should have: ``(map(b_in) + white_level) / 2`` (module docstring).

    brightness_map: the quantile map of input to target log2 brightness (fitted on the training crops).
    white_level: the targets' median log2 white level on their 64x64 whole-frame proxies.
    Stored in a model's config.json as ``"level": {"brightness_map": {...}, "white_level": w}``."""

    brightness_map: BrightnessAnchor
    white_level: float

    @classmethod
    def fit(cls, brightness_map: BrightnessAnchor, target_frames: np.ndarray) -> "LevelRule":
        """brightness_map: the anchor's quantile map (a white-point anchor's own white level is left out: the
        rule's is read here); target_frames: ``(M, 64, 64, 3)`` linear whole-frame proxies of the target photos."""
        if len(target_frames) < 1:
            raise ValueError("the level rule needs at least one target photo")
        bmap = BrightnessAnchor(brightness_map.input_levels, brightness_map.target_levels)
        return cls(bmap, float(np.median(log2_white(np.asarray(target_frames, np.float32)))))

    def to_dict(self) -> dict:
        return {"brightness_map": self.brightness_map.to_dict(), "white_level": round(self.white_level, 5)}

    @classmethod
    def from_dict(cls, d: dict) -> "LevelRule":
        """From config.json's ``"level"``; ValueError (naming the problem) for a malformed one."""
        try:
            rule = cls(BrightnessAnchor.from_dict(d["brightness_map"]), float(d["white_level"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed level rule ({type(e).__name__}: {e})") from None
        if not np.isfinite(rule.white_level) or not np.isfinite(rule.brightness_map.target_levels).all():
            raise ValueError("malformed level rule (non-finite levels)")
        return rule

    def targets(self, proxies: np.ndarray) -> np.ndarray:
        """``(N, h, w, 3)`` linear input proxies -> ``(N,)`` the level each output should have."""
        mapped = self.brightness_map.of_log2(log2_brightness(proxies))
        return 0.5 * (mapped + self.white_level)

    def offsets(self, proxies: np.ndarray, filter_ids: Sequence[np.ndarray], packed: Sequence[np.ndarray]
                ) -> np.ndarray:
        """The exposure gain (stops) to put in front of each program so that its output meets the rule.

        proxies: ``(N, h, w, 3)`` float32 linear inputs; per step t, ``filter_ids[t]`` ``(N,)`` and ``packed[t]``
        ``(N, P)``: step t of each program (:func:`~exposure_engine.renderer.step_batch`'s layout). Returns ``(N,)``,
        within +-:data:`SEARCH_EV`, the level met to :data:`TOLERANCE` stops (an input whose output cannot reach
        its level, e.g. a black frame, gets the bound).

        A safeguarded secant search: the output's level moves about one stop per stop of gain, so the first guess
        is the level's shortfall at no gain, then secant steps, each replaced by the bracket's midpoint when it
        would leave the bracket (bisection's guarantee for a monotone level, usually 3-4 renders instead of
        bisection's 14). Rows not yet within tolerance are rendered together, one batched render per round."""
        x0 = np.ascontiguousarray(proxies, np.float32)
        n = len(x0)
        want = self.targets(x0)
        # Each row's program with an Exposure step in front, as kernel constants prepared once: a round renders the
        # rows still searching in one pass, the gain going into the first step's constant (2^d, as Exposure's).
        ids = np.stack([np.full(n, _EXPOSURE.index), *[np.asarray(i) for i in filter_ids]], 1).astype(np.int32)
        consts = np.stack([np.zeros((n, F.MAX_KERNEL_CONSTS), np.float32),
                           *[prepared_constants(i, p) for i, p in zip(filter_ids, packed)]], 1)

        def miss(rows: np.ndarray, gains: np.ndarray) -> np.ndarray:  # level - want of the gained programs' outputs
            c = consts[rows]
            c[:, 0, 0] = np.exp2(gains.astype(np.float32))
            return display_level(programs_batch(x0[rows], ids[rows], c)) - want[rows]

        lo, hi = np.full(n, -SEARCH_EV), np.full(n, SEARCH_EV)
        d_prev = np.zeros(n)
        g_prev = miss(np.arange(n), d_prev)
        lo[g_prev < 0], hi[g_prev >= 0] = 0.0, 0.0
        d, best, best_g = np.clip(-g_prev, lo, hi), d_prev.copy(), np.abs(g_prev)
        active = np.abs(g_prev) > TOLERANCE
        for _ in range(MAX_ROUNDS):
            rows = np.flatnonzero(active)
            if rows.size == 0:
                break
            g = miss(rows, d[rows])
            dr = d[rows]
            lo[rows] = np.where(g < 0, dr, lo[rows])
            hi[rows] = np.where(g < 0, hi[rows], dr)
            better = np.abs(g) < best_g[rows]
            best[rows[better]], best_g[rows[better]] = dr[better], np.abs(g[better])
            slope = (g - g_prev[rows]) / np.where(dr != d_prev[rows], dr - d_prev[rows], np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                step = dr - g / slope
            mid = 0.5 * (lo[rows] + hi[rows])
            inside = np.isfinite(step) & (step > lo[rows]) & (step < hi[rows])
            d_prev[rows], g_prev[rows] = dr, g
            d[rows] = np.where(inside, step, mid)
            active[rows] = (np.abs(g) > TOLERANCE) & (hi[rows] - lo[rows] > 1e-4)
        # rows that never met the level: the bound their bracket closed on (black frames: +SEARCH_EV)
        closed = best_g > TOLERANCE
        best[closed] = np.where(np.abs(hi[closed] - lo[closed]) <= 1e-4, 0.5 * (lo[closed] + hi[closed]),
                                best[closed])
        return best


def with_gain(steps: list, offset_ev: float) -> tuple[list, bool]:
    """A program's steps with an exposure gain of ``offset_ev`` stops in front: folded into the first step when
    that is an Exposure step (``2^(ev + d) = 2^d 2^ev``: the same output), else a new Exposure step in front.
    Returns ``(steps, added)``; the step holding the gain records it in its meta as ``level_ev``."""
    from ..sequence import Step

    steps = list(steps)
    d = float(offset_ev)
    if steps and steps[0].filter == _EXPOSURE.name:
        ev = [float(steps[0].params["ev"]) + d]
        steps[0] = Step(_EXPOSURE.name, _EXPOSURE.to_json(ev),
                        {**steps[0].meta, "label": _EXPOSURE.label(ev), "level_ev": round(d, 4)})
        return steps, False
    return [Step(_EXPOSURE.name, _EXPOSURE.to_json([d]), {"label": _EXPOSURE.label([d]), "level_ev": round(d, 4)}),
            *steps], True


__all__ = ["LevelRule", "display_level", "log2_brightness", "log2_white", "with_gain"]
