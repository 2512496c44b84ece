"""Hidden "artist" styles: deterministic retouching programs that stand in for a photographer's taste.

A style maps a linear image (``(H, W, 3)`` float32, sRGB primaries, as decoded from a finished photo) to a
display sRGB image in [0, 1]. The quality benchmark applies a style to one half of a photo folder to make the
*targets* the agent learns from (it never sees the program), and to the held-out test photos to make their
*ground truth* (for paired PSNR / dE and the ceiling).

Two kinds, on purpose:

* ``expressible`` styles are a fixed edit sequence of the eight filters (rendered by
  :func:`exposure_engine.renderer.render`), at most 3 steps so that a 5-step agent has 2 steps left to undo the
  input's exposure and colour cast: the agent can in principle reach them exactly;
* the others use operations outside the eight filters: a lightness-dependent split toning in CIELAB and
  a matte curve with hue-selective desaturation in HLS. No sequence of pointwise per-channel curves, gains and
  global blends reproduces them exactly, so they measure how close the agent gets to a look it cannot express.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..imageio.transfer import linear_to_srgb
from ..sequence import EditSequence, Step
from .colour import hls_to_rgb, lab_to_linear, linear_to_lab, rgb_to_hls


@dataclass(frozen=True)
class Style:
    """A named retouching program. ``sequence`` is set for the expressible styles (then ``apply`` renders it)."""

    name: str
    title: str
    description: str
    program: Callable[[np.ndarray], np.ndarray]
    sequence: EditSequence | None = None

    @property
    def expressible(self) -> bool:
        return self.sequence is not None

    def apply(self, linear: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` linear float -> ``(H, W, 3)`` float32 display sRGB in [0, 1]."""
        if not isinstance(linear, np.ndarray) or linear.ndim != 3 or linear.shape[2] != 3:
            raise ValueError(f"style {self.name}: expected an (H, W, 3) linear image, got "
                             f"{getattr(linear, 'shape', type(linear).__name__)}")
        out = self.program(np.ascontiguousarray(linear, dtype=np.float32))
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _rendered(sequence: EditSequence) -> Callable[[np.ndarray], np.ndarray]:
    def program(linear: np.ndarray) -> np.ndarray:
        from ..renderer import render  # numba kernel: imported when a style is first applied

        return render(linear, sequence)

    return program


def _seq(*steps: tuple[str, dict]) -> EditSequence:
    return EditSequence([Step(name, params) for name, params in steps], {"style": True})


# ---------------------------------------------------------------------------------------------------------------
# Expressible by the eight filters

PUNCHY_SEQUENCE = _seq(
    ("gamma", {"gamma": 1 / 2.2}),          # display encoding, close to sRGB's curve
    ("contrast", {"amount": 0.45}),         # the paper's S-shaped luminance contrast
    ("saturation", {"amount": 0.6}),        # HSV saturation boost, strongest in the mid-tones
)

NOIR_SEQUENCE = _seq(
    ("black_and_white", {"amount": 1.0}),
    ("gamma", {"gamma": 1 / 2.0}),
    ("contrast", {"amount": 0.8}),
)


# ---------------------------------------------------------------------------------------------------------------
# Outside the eight filters


def teal_orange(linear: np.ndarray) -> np.ndarray:
    """Film-like split toning in CIELAB: an S-curve on L* with lifted blacks and rolled-off whites, shadows pushed
    to teal and highlights to orange in proportion to their lightness, chroma slightly reduced in the mid-tones."""
    lab = linear_to_lab(linear)
    t = np.clip(lab[..., 0] / 100.0, 0.0, 1.0)
    s_curve = t * t * (3.0 - 2.0 * t)                      # smoothstep: contrast around the middle
    L = 100.0 * (0.04 + 0.92 * (0.35 * t + 0.65 * s_curve))  # toe at L* 4, shoulder at L* 96
    shadow = (1.0 - t) ** 2
    highlight = t ** 2
    chroma_gain = 0.85 + 0.15 * np.abs(2.0 * t - 1.0)      # mid-tones lose up to 15 % chroma
    a = lab[..., 1] * chroma_gain - 9.0 * shadow + 7.0 * highlight
    b = lab[..., 2] * chroma_gain - 14.0 * shadow + 16.0 * highlight
    return linear_to_srgb(lab_to_linear(np.stack([L, a, b], axis=-1)), np.float64, clip=True).astype(np.float32)


def faded_matte(linear: np.ndarray) -> np.ndarray:
    """A faded print in HLS: lightness through a matte curve (blacks lifted to 0.12, whites capped at 0.94), saturation
    cut by 35 % and by a further 40 % on blues and cyans (hue-selective, which no per-channel curve can do), hue
    nudged 3 % towards yellow."""
    display = linear_to_srgb(linear, np.float64, clip=True)
    h, light, sat = rgb_to_hls(display)
    light = 0.12 + 0.82 * (light ** 0.9)
    blue = np.exp(-((((h - 0.6) + 0.5) % 1.0 - 0.5) / 0.12) ** 2)  # a bump over cyan (0.5) to blue (0.67) hues
    sat = sat * 0.65 * (1.0 - 0.4 * blue)
    h = (h - 0.03 * np.sin(2 * np.pi * (h - 1 / 6))) % 1.0   # hues drift slightly towards yellow (h = 1/6)
    return hls_to_rgb(h, light, sat).astype(np.float32)


def original(linear: np.ndarray) -> np.ndarray:
    """The photos' own look: the sRGB curve and a smoothstep tone curve, exactly what
    :func:`exposure_engine.training.unprocess.unprocess` undoes, so a photo's clean linear version comes back as the
    photo. The targets are then the photos themselves, as for the shipped model (``exposure-engine train
    --split-from``), which lets the bench score that model on its held-out inputs."""
    y = linear_to_srgb(linear, np.float64, clip=True)
    return (y * y * (3.0 - 2.0 * y)).astype(np.float32)


STYLES: dict[str, Style] = {
    s.name: s
    for s in [
        Style("punchy", "Punchy", "gamma 1/2.2, contrast +0.45, saturation 60 % (3 of the 8 filters)",
              _rendered(PUNCHY_SEQUENCE), PUNCHY_SEQUENCE),
        Style("noir", "Noir", "black & white 100 %, gamma 1/2, contrast +0.8 (3 of the 8 filters)",
              _rendered(NOIR_SEQUENCE), NOIR_SEQUENCE),
        Style("teal_orange", "Teal & orange", "CIELAB film curve with split toning (outside the 8 filters)",
              teal_orange),
        Style("faded_matte", "Faded matte", "HLS matte curve, hue-selective desaturation (outside the 8 filters)",
              faded_matte),
        Style("original", "Original", "the photos as they are (sRGB + smoothstep tone curve; the shipped model's "
              "targets); approximated, not exactly reproduced, by gamma + tone curve", original),
    ]
}


def get(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise KeyError(f"unknown style {name!r}; known: {', '.join(STYLES)}") from None
