"""GIMP 3 translation table: how each step of an edit sequence becomes native GIMP operations.

The GIMP plug-in (plugins/gimp/exposure-auto-retouch/) cannot import this package inside GIMP's Python, so the
engine computes a *plan* here and the daemon sends it (``export`` request, ``"format": "gimp"``); the plug-in
only executes it. One source of truth: a filter's GIMP translation lives next to the others, in this file.

Colour model (GIMP 3.0.4, measured, see docs/gimp.md): the plug-in converts the image to 32-bit float
*linear* precision, so a layer's stored value is the engine's state value itself, with nothing clipped between
steps. gegl:exposure, gegl:channel-mixer, gegl:rgb-clip, gegl:gamma and the curves PDB procedure all work on
those linear values, so:

=================  =============================================================  ==========
filter             GIMP operations                                                 exact?
=================  =============================================================  ==========
exposure           gegl:exposure (exposure = ev)                                   yes
gamma              gegl:rgb-clip (low 0.001, high off) + gegl:gamma (value = g)    yes
white_balance      gegl:channel-mixer, diagonal gains (+ gegl:exposure if > 2)     yes
saturation         engine-rendered pixels (HSV formula, no GIMP equivalent)        yes
tone_curve         gimp-drawable-curves-explicit, VALUE channel, 1025 samples      yes
color_curves       gimp-drawable-curves-explicit, RED/GREEN/BLUE, 1025 samples     yes
contrast           engine-rendered pixels (luminance cosine curve)                 yes
black_and_white    gegl:channel-mixer with the paper's luminance weights           yes
=================  =============================================================  ==========

The curves are the paper's piecewise-linear curves sampled at x = k/1024: their knots (i/8) fall on samples
and GIMP interpolates linearly between samples, so the sampled curve *is* the curve. They are not remapped
(LUT_lin(x) = lin(curve(srgb(x)))) because the state is stored as is, not sRGB-encoded; GIMP's curves clamp
to [0, 1], and so do the paper's.

The sequence's output is display-encoded sRGB, while GIMP shows a linear image's values through the sRGB
encoding. A final "Display encoding" layer therefore stores ``srgb_to_linear(clip(x))``: what GIMP displays
(and exports) is then exactly the sequence's clipped output, as :func:`exposure_engine.render` gives it.

Plan format (``FORMAT`` / ``VERSION``; JSON, what the daemon's reply header carries under ``plan``)::

    {"format": "exposure-gimp-plan", "version": 1, "mode": "native" | "exact",
     "layers": [{"index": 1, "filter": "exposure", "name": "1 · Exposure +1.21 EV",
                 "step": {"filter": ..., "params": {...}},        # the sequence step (parasite content)
                 "ops": [OP, ...]}, ...]}                          # applied in order on a copy of the layer below

    OP = {"op": "gegl", "operation": "gegl:exposure", "properties": {"exposure": 1.21}}
       | {"op": "curves", "channel": "value" | "red" | "green" | "blue", "values": [1025 floats]}
       | {"op": "engine-render", "sequence": {single-step edit sequence v1}}   # daemon render, clip = false
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .. import filters as F
from ..imageio.transfer import linear_to_srgb, srgb_to_linear
from ..sequence import EditSequence, as_sequence

FORMAT = "exposure-gimp-plan"
VERSION = 1
MODES = ("native", "exact")  # the names of exporters.MODES: "exact" = every step engine-rendered
#: Samples of a curve sent to gimp-drawable-curves-explicit (GIMP accepts up to 2096). 1025 puts a sample on
#: every knot i/8 of the paper's curves, so linear interpolation between samples reproduces them exactly.
CURVE_SAMPLES = 1025
#: gegl:channel-mixer's gain properties are limited to [-2, 2] in GEGL 0.4.62.
MIXER_LIMIT = 2.0
#: Decimals kept for curve samples: 1e-8 is below float32 resolution near 1; a three-channel plan is ~35 KB.
CURVE_DECIMALS = 8
DISPLAY_ENCODING = "display_encoding"
DISPLAY_TITLE = "Display encoding (sRGB)"
#: Filters GIMP cannot express; the plug-in asks the daemon to render their pixels.
ENGINE_RENDERED = frozenset({"saturation", "contrast"})
#: Labels longer than this (the curves' slope lists) are left out of layer names; the parasite keeps them.
MAX_LABEL_IN_NAME = 40
PARASITE = "exposure-engine-step"  # the layer parasite holding the step's JSON


def _gegl(operation: str, **properties: float | bool) -> dict:
    return {"op": "gegl", "operation": operation, "properties": properties}


def _curve_samples(slopes: Iterable[float]) -> list[float]:
    """The paper's 8-segment curve with ``slopes`` sampled at k/(CURVE_SAMPLES-1): a list of floats in [0, 1]."""
    t = np.asarray(list(slopes), np.float64)
    n = t.size
    x = np.linspace(0.0, 1.0, CURVE_SAMPLES)
    y = np.zeros_like(x)
    for i in range(n):
        y += np.clip(x - i / n, 0.0, 1.0 / n) * t[i]
    y *= n / t.sum()
    return [round(float(v), CURVE_DECIMALS) for v in np.clip(y, 0.0, 1.0)]


def _curves(channel: str, values: list[float]) -> dict:
    return {"op": "curves", "channel": channel, "values": values}


def display_encoding_samples() -> list[float]:
    """The sRGB EOTF sampled on [0, 1]: stored linear value that GIMP displays as the encoded value x."""
    x = np.linspace(0.0, 1.0, CURVE_SAMPLES)
    return [round(float(v), CURVE_DECIMALS) for v in srgb_to_linear(x, np.float64)]


def _white_balance_ops(gains: list[float]) -> list[dict]:
    ops = []
    top = max(abs(g) for g in gains)
    if top > MIXER_LIMIT:
        # Outside channel-mixer's range: scale by a power of two with gegl:exposure first (exact in float).
        ev = math.ceil(math.log2(top / MIXER_LIMIT))
        ops.append(_gegl("gegl:exposure", exposure=float(ev)))
        gains = [g / 2.0 ** ev for g in gains]
    ops.append(_gegl("gegl:channel-mixer", **{"preserve-luminosity": False, "rr-gain": gains[0],
                                              "gg-gain": gains[1], "bb-gain": gains[2]}))
    return ops


def _black_and_white_ops(p: float) -> list[dict]:
    # out_c = c + p (L - c) with L = 0.27 R + 0.67 G + 0.06 B: one 3x3 matrix. GIMP's desaturate uses babl's
    # Rec.709-D50 weights (0.2225, 0.7169, 0.0606), not the paper's, so it would not match.
    w = (F.LUM_R, F.LUM_G, F.LUM_B)
    props: dict[str, float | bool] = {"preserve-luminosity": False}
    for i, out_c in enumerate("rgb"):
        for j, in_c in enumerate("rgb"):
            props[f"{out_c}{in_c}-gain"] = (1.0 - p if i == j else 0.0) + p * w[j]
    return [{"op": "gegl", "operation": "gegl:channel-mixer", "properties": props}]


def native_ops(filter_name: str, packed: list[float]) -> list[dict] | None:
    """GIMP operations reproducing one step exactly, or None when GIMP has no equivalent (engine-rendered)."""
    if filter_name == "exposure":
        return [_gegl("gegl:exposure", exposure=packed[0])]
    if filter_name == "gamma":
        # max(x, 0.001)^g: GIMP's levels leave x <= 0 unchanged (0.001^(1/3) is 0.1, a visible lift).
        return [_gegl("gegl:rgb-clip", **{"clip-low": True, "low-limit": F.GAMMA_FLOOR, "clip-high": False}),
                _gegl("gegl:gamma", value=packed[0])]
    if filter_name == "white_balance":
        return _white_balance_ops(list(packed[:3]))
    if filter_name == "tone_curve":
        return [_curves("value", _curve_samples(packed[: F.CURVE_SEGMENTS]))]
    if filter_name == "color_curves":
        n = F.CURVE_SEGMENTS
        return [_curves(ch, _curve_samples(packed[c * n:(c + 1) * n])) for c, ch in enumerate(("red", "green", "blue"))]
    if filter_name == "black_and_white":
        return _black_and_white_ops(packed[0])
    if filter_name in ENGINE_RENDERED:
        return None
    raise KeyError(f"no GIMP translation for filter {filter_name!r}: add it to exposure_engine/exporters/gimp.py")


def layer_name(index: int, step_label: str, title: str) -> str:
    """``"3 · Exposure +1.21 EV"``; the title alone when the label is a long list of slopes."""
    return f"{index} · {step_label if len(step_label) <= MAX_LABEL_IN_NAME else title}"


def plan(sequence: EditSequence | dict | str, mode: str = "native") -> dict:
    """The GIMP plan of ``sequence``: one layer per step plus the display-encoding layer (see module doc).

    mode: ``native`` uses GIMP operations wherever they are exact and engine-rendered pixels elsewhere;
    ``exact`` has the engine render every step (pixels identical to the renderer, no editable GIMP ops).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    seq = as_sequence(sequence)
    layers: list[dict[str, Any]] = []
    for k, step in enumerate(seq.steps, start=1):
        f = step.definition
        packed = [float(v) for v in step.packed()]
        ops = native_ops(f.name, packed) if mode == "native" else None
        if ops is None:
            one = EditSequence([type(step)(step.filter, dict(step.params))])
            ops = [{"op": "engine-render", "sequence": one.to_dict()}]
        layers.append({"index": k, "filter": f.name, "name": layer_name(k, step.label, f.title),
                       "step": {"filter": step.filter, "params": step.params, "label": step.label}, "ops": ops})
    k = len(seq.steps) + 1
    layers.append({"index": k, "filter": DISPLAY_ENCODING, "name": layer_name(k, DISPLAY_TITLE, DISPLAY_TITLE),
                   "step": {"filter": DISPLAY_ENCODING, "params": {}, "label": DISPLAY_TITLE},
                   "ops": [_curves("value", display_encoding_samples())]})
    return {"format": FORMAT, "version": VERSION, "mode": mode, "layers": layers}


def export(sequence: EditSequence | dict | str, mode: str = "native", name: str = "exposure") -> dict[str, bytes]:
    """The plan as one JSON file, in the shape of :func:`exposure_engine.exporters.export`'s result:
    ``{"NAME.gimp-plan.json": bytes}``. This is what the daemon's ``export`` request with ``"format": "gimp"``
    returns to the plug-in (a payload frame: a colour-curves plan is ~35 KB, too close to the header limit)."""
    import json

    from . import safe_name

    stem = safe_name(name)
    return {f"{stem}.gimp-plan.json": json.dumps(plan(sequence, mode), ensure_ascii=False).encode("utf-8")}


def simulate(image: np.ndarray, the_plan: dict) -> np.ndarray:
    """What GIMP computes for ``the_plan``, in numpy, from the linear ``(H, W, 3)`` float image.

    Returns the *displayed* values ``(H, W, 3)`` (sRGB-encoded, as GIMP shows and exports them). Used by the
    unit tests to check the translation table against :func:`exposure_engine.render` without GIMP; the
    integration test checks GIMP itself.
    """
    from ..renderer import render

    x = np.asarray(image, np.float64).copy()
    for layer in the_plan["layers"]:
        for op in layer["ops"]:
            x = _simulate_op(x, op, render)
    return linear_to_srgb(x)


def _simulate_op(x: np.ndarray, op: dict, render) -> np.ndarray:
    kind = op["op"]
    if kind == "engine-render":
        return render(x.astype(np.float32), op["sequence"], clip=False).astype(np.float64)
    if kind == "curves":
        # GIMP: input clamped to [0, 1], linear interpolation between samples.
        v = np.asarray(op["values"], np.float64)
        ch = {"value": [0, 1, 2], "red": [0], "green": [1], "blue": [2]}[op["channel"]]
        x = x.copy()
        for c in ch:
            x[..., c] = np.interp(np.clip(x[..., c], 0.0, 1.0), np.linspace(0, 1, v.size), v)
        return x
    name, p = op["operation"], op["properties"]
    if name == "gegl:exposure":
        return x * 2.0 ** p["exposure"]
    if name == "gegl:rgb-clip":
        lo = p["low-limit"] if p.get("clip-low", True) else -np.inf
        hi = p["high-limit"] if p.get("clip-high", True) else np.inf
        return np.clip(x, lo, hi)
    if name == "gegl:gamma":
        return np.where(x > 0, np.abs(x) ** p["value"], x)
    if name == "gegl:channel-mixer":
        m = np.array([[p.get(f"{o}{i}-gain", 1.0 if o == i else 0.0) for i in "rgb"] for o in "rgb"])
        return x @ m.T
    raise KeyError(f"unknown operation {name}")
