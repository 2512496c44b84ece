"""The level rule: the program's exposure (and, for models that have a contrast map, its contrast) retuned so that
the finished photo's level follows two unpaired readings.

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
step goes in front, so the program stays a white-box sequence of ordinary edits.

The contrast part (since 2026-12-07, models fitted with their inputs' frames): the output's *contrast*, the
standard deviation of its log2 luminance (:func:`log2_contrast`, stops), is set to a weighted mean of two
readings, the input's contrast mapped by the quantile map of the training inputs' contrast to the targets'
(exposure leaves it all but unchanged, so the input's reading survives its unknown exposure; weight
``contrast_weight``, 3/4 for rules fitted since 2026-12-07, later: 1/2 before) and the contrast of the policy's own
program, by a Contrast step (the paper's filter) appended to the program; the level's gain is then found again
with that step in place (:meth:`LevelRule.retune`). Measured: docs/training.md, "The level rule".

Shapes: proxies ``(N, h, w, 3)`` float32 linear RGB; states after a program are display-encoded sRGB (unclipped;
read as the renderer's clipped output is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from .. import filters as F
from ..imageio import transfer as T
from ..renderer import KERNEL_DIGEST, prepared_constants, programs_batch, step_batch_kernel
from ..training.anchor import WHITE_QUANTILE, BrightnessAnchor
from ..vecmath import clamp, fmin, log2_f32, pow_f32

_LUM_R, _LUM_G, _LUM_B = F.LUM  # float32 scalars for the compiled read
# The sRGB curve's constants (imageio/transfer.py) as float32, for the compiled decoding in display_luminance
_SRGB_A, _SRGB_A_INV, _SRGB_GAMMA = np.float32(T.SRGB_A), np.float32(1 / (1 + T.SRGB_A)), np.float32(T.SRGB_GAMMA)
_SRGB_SLOPE_INV, _SRGB_KNEE = np.float32(1 / T.SRGB_SLOPE), np.float32(T.DECODE_KNEE)
_EXPOSURE = F.get("exposure")  # the registry's entry (F.EXPOSURE itself has no index)
_CONTRAST = F.get("contrast")
_FLOOR = 1e-6  # luminance floor, as the anchor's: a black image has level log2(1e-6), not -inf
SEARCH_EV = 3.0  # the gain is searched within +-3 stops
TOLERANCE = 0.001  # stops: the level (and the contrast) met to this (a stop's thousandth: nothing visible)
MAX_ROUNDS = 30  # secant/bisection rounds at most (bisection alone: 6 stops to 1e-4 in 16)
MIN_OFFSET_EV = 0.005  # smaller gains are left out (no step added for nothing)
CONTRAST_EPS = 1e-3  # log2_contrast's luminance offset: black pixels count as 10 stops under white, not -inf
MIN_CONTRAST = 0.005  # smaller Contrast amounts are left out
CONTRAST_WEIGHT = 0.75  # the mapped input's share of the contrast asked for, in rules fitted now (validation)
CONTRAST_ROUNDS = 2  # contrast, then level, twice: the second round corrects what the new gain moved (docs/training.md)


def luminance(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N, h*w)`` float32 luminance of the values clipped to [0, 1] (as the
    brightness anchor reads inputs): what the three statistics below read."""
    return np.clip(linear, 0.0, 1.0).reshape(len(linear), -1, 3) @ F.LUM


def display_luminance(display: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` display-encoded sRGB -> ``(N, h*w)``: :func:`luminance` of its linear values (display values
    clipped to [0, 1] first, as the renderer's output is) in one compiled pass, the sRGB curve evaluated by
    ``vecmath.pow_f32``: the level rule reads every render of its searches this way (5x faster than decoding with
    numpy, within 3e-7)."""
    flat = np.ascontiguousarray(display, np.float32).reshape(-1)
    out = np.empty(len(flat) // 3, np.float32)
    _display_lum(flat, np.empty_like(flat), out)
    return out.reshape(len(display), -1)


@numba.njit(cache=True, inline="always", fastmath={"contract"}, error_model="numpy")
def _decode(v):
    a = clamp(v, np.float32(0.0), np.float32(1.0))
    curve = pow_f32((a + _SRGB_A) * _SRGB_A_INV, _SRGB_GAMMA)  # both sides computed: the select vectorises
    return fmin(a * _SRGB_SLOPE_INV if a <= _SRGB_KNEE else curve, np.float32(1.0))


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _display_lum(flat, linear, out):
    for i in range(flat.size):  # one flat loop (vectorised), then the weighted sums: 5x the speed of one
        linear[i] = _decode(flat[i])  # loop over pixels decoding 3 channels each
    for i in range(out.size):
        out[i] = _LUM_R * linear[3 * i] + _LUM_G * linear[3 * i + 1] + _LUM_B * linear[3 * i + 2]


def _make_search_reads(digest: str):
    # The reads of the level rule's searches, fused with what they read: each round's candidates (a render of each
    # program, or the lerp of a Contrast step) go straight into their statistic one image at a time, through the
    # same kernels as the unfused path (renderer's step batch, _display_lum, _log2_offset), with no (N, h, w, 3)
    # arrays made, copied or decoded in between: per round the values of display_level(programs_batch(...)) and
    # _log2_contrast(display_luminance(...)) within float rounding (the sums are sequential here, pairwise in numpy).
    # The digest (renderer.KERNEL_DIGEST, a closure variable) keys the on-disk cache on the step kernels these run,
    # as renderer._make_render_rows explains.
    @numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
    def render_levels(x0, rows, ids, consts, lead, out):
        """x0: ``(N, h, w, 3)`` float32 C-contiguous; for each r, image ``b = rows[r]`` through its program
        ``ids[b]`` ``(T,)`` / ``consts[b]`` ``(T, K)`` with its first step's constant replaced by ``lead[r]`` (the
        gain, 2^d, of :func:`_gained_program`'s Exposure); ``out[r]``: the render's :func:`display_level`."""
        if len(digest) == 0:  # never true: references the digest so that it is part of the key
            return
        img = np.empty((1, x0.shape[1], x0.shape[2], 3), np.float32)
        flat = img.reshape(-1)
        linear = np.empty_like(flat)
        lum = np.empty(flat.size // 3, np.float32)
        k = np.empty((1, consts.shape[1], consts.shape[2]), np.float32)
        for r in range(rows.size):
            b = rows[r]
            img[0] = x0[b]
            k[0] = consts[b]
            k[0, 0, 0] = lead[r]
            step_batch_kernel(img, ids[b:b + 1], k)
            _display_lum(flat, linear, lum)
            total = 0.0
            for i in range(lum.size):
                total += lum[i]
            white = _white_quantile(lum, WHITE_QUANTILE * (lum.size - 1))
            out[r] = 0.5 * (np.log2(max(total / lum.size, _FLOOR)) + np.log2(max(white, _FLOOR)))

    @numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
    def lerp_contrasts(final, delta, rows, amounts, eps, out):
        """For each r, image ``b = rows[r]``: ``out[r]`` = :func:`_log2_contrast` of the display luminance of
        ``final[b] + amounts[r] * delta[b]`` (float32 ``(N, h, w, 3)`` C-contiguous both)."""
        if len(digest) == 0:
            return
        size = final.shape[1] * final.shape[2] * 3
        lerped, linear = np.empty(size, np.float32), np.empty(size, np.float32)
        lum, logs = np.empty(size // 3, np.float32), np.empty(size // 3, np.float64)
        for r in range(rows.size):
            b = rows[r]
            f, d, a = final[b].reshape(-1), delta[b].reshape(-1), amounts[r]
            for i in range(size):
                lerped[i] = _lerp(f[i], d[i], a)
            _display_lum(lerped, linear, lum)
            _log2_offset(lum, eps, logs)
            total = 0.0
            for i in range(logs.size):
                total += logs[i]
            mean = total / logs.size
            spread = 0.0
            for i in range(logs.size):  # two passes, as numpy's std: a flat frame's contrast is exactly 0
                spread += (logs[i] - mean) * (logs[i] - mean)
            out[r] = np.sqrt(spread / logs.size)

    return render_levels, lerp_contrasts


# fastmath=False set, not left out: numba compiles a callee that leaves it out with its caller's fastmath flags
# (lerp_contrasts' "contract" would fuse this into an FMA, one rounding where numpy's f + a * d has two).
@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def _lerp(f, d, a):
    return f + a * d


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")  # interpolated without an FMA, as numpy
def _white_quantile(v, pos):
    """The quantile of ``v`` (float32 ``(n,)``) at ``pos = q (n - 1)``, interpolated between the order statistics
    ``floor(pos)`` and the next as ``np.quantile`` does, from a sorted buffer of the few largest values (the white
    level's 99.5th percentile of 4096 pixels needs 22 of them) instead of a partial sort: every white level here."""
    n = v.size
    if n == 1:
        return np.float64(v[0])
    k = min(int(pos), n - 2)
    m = n - k  # top[0] is order statistic k, top[1] is k + 1
    top = np.empty(m, np.float32)
    for i in range(m):  # insertion sort of the first m values
        x, j = v[i], i
        while j > 0 and top[j - 1] > x:
            top[j] = top[j - 1]
            j -= 1
        top[j] = x
    for i in range(m, n):
        x = v[i]
        if x > top[0]:  # among the m largest so far: drop the smallest, insert x in order
            j = 1
            while j < m and top[j] < x:
                top[j - 1] = top[j]
                j += 1
            top[j - 1] = x
    return np.float64(top[0]) + (pos - k) * (np.float64(top[1]) - top[0])


def _log2_brightness(lum: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(lum.mean(1, dtype=np.float64), _FLOOR))


def _log2_white(lum: np.ndarray) -> np.ndarray:
    pos = WHITE_QUANTILE * (lum.shape[1] - 1)
    rows = np.ascontiguousarray(lum, np.float32)
    return np.log2(np.maximum([_white_quantile(row, pos) for row in rows], _FLOOR))


def _log2_contrast(lum: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(lum, np.float32).reshape(-1)
    logs = np.empty(len(flat), np.float64)
    _log2_offset(flat, np.float32(CONTRAST_EPS), logs)
    return logs.reshape(lum.shape).std(1)  # numpy's two passes: a flat frame's contrast is exactly 0


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _log2_offset(flat, eps, out):  # np.log2(flat + eps), vectorised (vecmath's log2: within 2e-7)
    for i in range(flat.size):
        out[i] = log2_f32(flat[i] + eps)


_render_levels, _lerp_contrasts = _make_search_reads(KERNEL_DIGEST)


def log2_brightness(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N,)`` log2 mean :func:`luminance`."""
    return _log2_brightness(luminance(linear))


def log2_white(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N,)`` log2 white level: the 99.5th percentile of :func:`luminance` (linear
    interpolation between the two order statistics around it, as ``np.quantile`` and ``torch.quantile`` do, by a
    partial sort: np.quantile's own overhead was a third of the level rule's time)."""
    return _log2_white(luminance(linear))


def log2_contrast(linear: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` linear RGB -> ``(N,)`` contrast: the standard deviation of ``log2(luminance + 1e-3)`` in
    stops (:func:`luminance`): how far apart the image's tones are, all but unchanged by an exposure gain."""
    return _log2_contrast(luminance(linear))


def display_level(display: np.ndarray) -> np.ndarray:
    """``(N, h, w, 3)`` display-encoded sRGB -> ``(N,)`` level: mean of log2 brightness and log2 white level."""
    lum = display_luminance(display)
    return 0.5 * (_log2_brightness(lum) + _log2_white(lum))


@dataclass(frozen=True)
class LevelRule:
    """What level each input's output should have: ``(map(b_in) + white_level) / 2`` (module docstring).

    brightness_map: the quantile map of input to target log2 brightness (fitted on the training crops).
    white_level: the targets' median log2 white level on their 64x64 whole-frame proxies.
    contrast_map: the quantile map of the inputs' :func:`log2_contrast` to the targets' (64x64 whole-frame proxies
    both), or None: no contrast step (models saved before it existed).
    contrast_weight: the mapped reading's share of the contrast asked for (the policy's own program has the rest):
    :data:`CONTRAST_WEIGHT` when fitted, 0.5 for a rule stored without it (fitted before it existed).
    Stored in a model's config.json as ``"level": {"brightness_map": {...}, "white_level": w[, "contrast_map":
    {...}, "contrast_weight": c]}``."""

    brightness_map: BrightnessAnchor
    white_level: float
    contrast_map: BrightnessAnchor | None = None
    contrast_weight: float = 0.5

    @classmethod
    def fit(cls, brightness_map: BrightnessAnchor, target_frames: np.ndarray,
            input_frames: np.ndarray | None = None) -> "LevelRule":
        """brightness_map: the anchor's quantile map (a white-point anchor's own white level is left out: the
        rule's is read here); target_frames: ``(M, 64, 64, 3)`` linear whole-frame proxies of the target photos;
        input_frames: the training inputs' (the contrast map needs them; without them the rule has none)."""
        if len(target_frames) < 1:
            raise ValueError("the level rule needs at least one target photo")
        targets = np.asarray(target_frames, np.float32)
        bmap = BrightnessAnchor(brightness_map.input_levels, brightness_map.target_levels)
        cmap = None
        if input_frames is not None and len(input_frames):
            cmap = BrightnessAnchor.from_values(log2_contrast(np.asarray(input_frames, np.float32)),
                                                log2_contrast(targets))
        return cls(bmap, float(np.median(log2_white(targets))), cmap, CONTRAST_WEIGHT)

    def to_dict(self) -> dict:
        d = {"brightness_map": self.brightness_map.to_dict(), "white_level": round(self.white_level, 5)}
        if self.contrast_map is None:
            return d
        d["contrast_map"] = self.contrast_map.to_dict()
        if self.contrast_weight != 0.5:  # the plain mean is stored as before the weight existed: the same rule
            d["contrast_weight"] = self.contrast_weight  # keeps the same hash (sequences' model.level_rule)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LevelRule":
        """From config.json's ``"level"``; ValueError (naming the problem) for a malformed one."""
        try:
            cmap = d.get("contrast_map")
            rule = cls(BrightnessAnchor.from_dict(d["brightness_map"]), float(d["white_level"]),
                       None if cmap is None else BrightnessAnchor.from_dict(cmap), float(d.get("contrast_weight", 0.5)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"malformed level rule ({type(e).__name__}: {e})") from None
        maps = [rule.brightness_map] + ([] if rule.contrast_map is None else [rule.contrast_map])
        if not 0.0 <= rule.contrast_weight <= 1.0:
            raise ValueError(f"malformed level rule (contrast_weight {rule.contrast_weight} outside [0, 1])")
        if not np.isfinite(rule.white_level) or not all(np.isfinite(m.input_levels).all()
                                                        and np.isfinite(m.target_levels).all() for m in maps):
            raise ValueError("malformed level rule (non-finite levels)")
        return rule

    def targets(self, proxies: np.ndarray) -> np.ndarray:
        """``(N, h, w, 3)`` linear input proxies -> ``(N,)`` the level each output should have."""
        mapped = self.brightness_map.of_log2(log2_brightness(proxies))
        return 0.5 * (mapped + self.white_level)

    def offsets(self, proxies: np.ndarray, filter_ids: Sequence[np.ndarray], packed: Sequence[np.ndarray], *,
                prepared: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The exposure gain (stops) to put in front of each program so that its output meets the rule.

        proxies: ``(N, h, w, 3)`` float32 linear inputs; per step t, ``filter_ids[t]`` ``(N,)`` and ``packed[t]``
        ``(N, P)``: step t of each program (:func:`~exposure_engine.renderer.step_batch`'s layout); ``prepared[t]``,
        when the caller has them, the same steps' kernel constants (``renderer.prepared_constants``: not prepared
        again). Returns ``(N,)``,
        within +-:data:`SEARCH_EV`, the level met to :data:`TOLERANCE` stops (an output that cannot reach its level
        gets the gain that comes closest: the bound, or 0 for a black frame, which no gain changes). The search:
        :func:`_solve`, about one stop of level per stop of gain (usually 3-4 renders instead of bisection's 14)."""
        x0 = np.ascontiguousarray(proxies, np.float32)
        return self._gains(x0, *_gained_program(filter_ids, packed, len(x0), prepared), self.targets(x0))

    @staticmethod
    def _gains(x0: np.ndarray, ids: np.ndarray, consts: np.ndarray, want: np.ndarray,
               start: np.ndarray | None = None) -> np.ndarray:
        """:meth:`offsets` of programs already in :func:`_gained_program`'s form, to the levels ``want`` (a round
        renders the rows still searching in one pass, the gain going into the first step's constant, 2^d as
        Exposure's), the search starting from ``start`` (default 0)."""
        ids, consts = np.ascontiguousarray(ids, np.int32), np.ascontiguousarray(consts, np.float32)

        def miss(rows: np.ndarray, gains: np.ndarray) -> np.ndarray:  # level - want of the gained programs' outputs
            levels = np.empty(len(rows))
            _render_levels(x0, rows, ids, consts, np.exp2(gains.astype(np.float32)), levels)
            return levels - want[rows]

        return _solve(miss, len(x0), SEARCH_EV, 1.0, start)

    def mapped_contrast(self, proxies: np.ndarray) -> np.ndarray:
        """``(N, h, w, 3)`` linear input proxies -> ``(N,)`` their contrast mapped by the contrast map (stops)."""
        if self.contrast_map is None:
            raise ValueError("this level rule has no contrast map")
        return self.contrast_map.of_log2(log2_contrast(proxies))

    def retune(self, proxies: np.ndarray, filter_ids: Sequence[np.ndarray], packed: Sequence[np.ndarray], *,
               prepared: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(gains, amounts, contrasts)``: the exposure gain in front of each program (stops, as :meth:`offsets`)
        and, with a contrast map, the amount of a Contrast step after it (``(N,)`` in [-1, 1]) and the contrast it
        gives the output (stops; both None without a map). Arguments as :meth:`offsets`.

        The contrast asked for is a weighted mean of two readings (``contrast_weight``): the input's contrast
        mapped by the contrast map, and the contrast of the policy's own program at its level (what the critic
        taught it). The
        amount is found on each program's final state (:func:`_solve`: contrast rises with it, about 0.3 stops per
        unit); then the gain is found again with the Contrast step in place (a gain in front of a tone curve moves
        the contrast a little, so the output's contrast ends within a few hundredths of a stop of the one asked)."""
        x0 = np.ascontiguousarray(proxies, np.float32)
        n = len(x0)
        ids, consts = _gained_program(filter_ids, packed, n, prepared)
        levels = self.targets(x0)
        gains = self._gains(x0, ids, consts, levels)
        if self.contrast_map is None:
            return gains, None, None
        con_ids = np.full((n, 1), _CONTRAST.index, np.int32)
        want = amounts = None
        for _ in range(CONTRAST_ROUNDS):
            c = consts.copy()
            c[:, 0, 0] = np.exp2(gains.astype(np.float32))
            final = programs_batch(x0.copy(), ids, c)  # unclipped: the Contrast step reads what the renderer gives
            if want is None:
                w = self.contrast_weight
                want = w * self.mapped_contrast(x0) + (1 - w) * _log2_contrast(display_luminance(final))
            # The Contrast filter is a lerp from its input to its amount-1 output (filters.py), so one render of
            # the step at amount 1 gives the output of every amount.
            delta = programs_batch(final.copy(), con_ids, _amount_consts(np.ones(n, np.float32))) - final

            def miss(rows: np.ndarray, a: np.ndarray) -> np.ndarray:  # contrast - want after a Contrast step
                contrasts = np.empty(len(rows))
                _lerp_contrasts(final, delta, rows, a.astype(np.float32), np.float32(CONTRAST_EPS), contrasts)
                return contrasts - want[rows]

            amounts = _solve(miss, n, 1.0, 0.3).astype(np.float32)
            amounts[np.abs(amounts) < MIN_CONTRAST] = 0.0
            gains = self._gains(x0, np.concatenate([ids, con_ids], 1),
                                np.concatenate([consts, _amount_consts(amounts)], 1), levels, start=gains)
        return gains, amounts, want


def _solve(miss, n: int, bound: float, slope: float, start: np.ndarray | None = None) -> np.ndarray:
    """Per row, the x in [-bound, bound] where ``miss(rows, x)`` (increasing in x) is 0, to :data:`TOLERANCE`.

    A safeguarded secant search from ``start`` (default 0; :meth:`LevelRule.retune` restarts the level's search from
    the gain found before): the first guess corrects the miss there by the expected ``slope``, then secant steps,
    each replaced by the bracket's midpoint when it would leave the bracket (bisection's guarantee for a monotone
    miss). Rows not yet within tolerance are evaluated together, one ``miss`` call per round. A row whose miss never
    reaches 0 gets the x with the smallest miss found: the bound it closed on when the miss shrinks toward it (a
    frame too dark for +bound), the start when nothing moves it (a black frame's gain, a flat frame's contrast: no
    step for nothing)."""
    lo, hi = np.full(n, -bound), np.full(n, bound)
    x_prev = np.zeros(n) if start is None else np.clip(np.asarray(start, np.float64), -bound, bound)
    g_prev = miss(np.arange(n), x_prev)
    lo, hi = np.where(g_prev < 0, x_prev, lo), np.where(g_prev >= 0, x_prev, hi)
    x, best, best_g = np.clip(x_prev - g_prev / slope, lo, hi), x_prev.copy(), np.abs(g_prev)
    active = np.abs(g_prev) > TOLERANCE
    for _ in range(MAX_ROUNDS):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        xr = x[rows]
        g = miss(rows, xr)
        lo[rows] = np.where(g < 0, xr, lo[rows])
        hi[rows] = np.where(g < 0, hi[rows], xr)
        better = np.abs(g) < best_g[rows] - 1e-6  # a real gain, not rounding (a flat frame's contrast: ~1e-15)
        best[rows[better]], best_g[rows[better]] = xr[better], np.abs(g[better])
        with np.errstate(invalid="ignore", divide="ignore"):
            secant = (g - g_prev[rows]) / np.where(xr != x_prev[rows], xr - x_prev[rows], np.nan)
            step = xr - g / secant
        mid = 0.5 * (lo[rows] + hi[rows])
        inside = np.isfinite(step) & (step > lo[rows]) & (step < hi[rows])
        x_prev[rows], g_prev[rows] = xr, g
        x[rows] = np.where(inside, step, mid)
        active[rows] = (np.abs(g) > TOLERANCE) & (hi[rows] - lo[rows] > 1e-4)
    return best


def _gained_program(filter_ids: Sequence[np.ndarray], packed: Sequence[np.ndarray], n: int,
                    prepared: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N, 1 + T), consts (N, 1 + T, K))`` of each row's program with an Exposure step in front (its constant
    0: set ``consts[:, 0, 0] = 2^gain``), for :func:`~exposure_engine.renderer.programs_batch`; ``prepared``: the
    steps' kernel constants when the caller has them."""
    if prepared is None:
        prepared = [prepared_constants(i, p) for i, p in zip(filter_ids, packed)]
    ids = np.stack([np.full(n, _EXPOSURE.index), *[np.asarray(i) for i in filter_ids]], 1).astype(np.int32)
    consts = np.stack([np.zeros((n, F.MAX_KERNEL_CONSTS), np.float32), *prepared], 1)
    return ids, consts


def _amount_consts(amounts: np.ndarray) -> np.ndarray:
    """``(N, 1, K)`` kernel constants of one Contrast step per row (its packed value is its constant)."""
    c = np.zeros((len(amounts), 1, F.MAX_KERNEL_CONSTS), np.float32)
    c[:, 0, 0] = amounts
    return c


def added_by_rule(step) -> bool:
    """Whether ``step`` is one the level rule added (:func:`with_gain`'s Exposure in front, :func:`with_contrast`'s
    Contrast at the end), not one the policy chose (a gain folded into the policy's own Exposure keeps its
    probabilities: that step stays the policy's)."""
    return ("level_ev" in step.meta or "level_contrast" in step.meta) and "probabilities" not in step.meta


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


def with_contrast(steps: list, amount: float, target: float) -> list:
    """A program's steps with the rule's Contrast step of ``amount`` appended (its meta records the contrast it
    asks of the output, ``level_contrast``, stops)."""
    from ..sequence import Step

    v = [float(amount)]
    return [*steps, Step(_CONTRAST.name, _CONTRAST.to_json(v), {"label": _CONTRAST.label(v),
                                                                 "level_contrast": round(float(target), 4)})]


__all__ = ["LevelRule", "added_by_rule", "display_level", "display_luminance", "log2_brightness", "log2_contrast",
           "log2_white", "luminance", "with_contrast", "with_gain"]
