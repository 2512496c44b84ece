"""The brightness anchor (recipe ``brightness_anchor``; not in the paper: 0.5 in ``cpu-fast``, off in ``paper``).

The unpaired critic judges each output alone, so nothing in the paper's objective ties how bright an output is to
how bright its input was: a policy that makes every photo equally bright can satisfy the critic and still be far
from each photo's own look (docs/evaluation.md, "Where the paired error is"). The anchor adds that tie without
pairs: each input's brightness is mapped to a target brightness by the 1-D optimal transport map between the two
sets' brightness distributions (input quantile -> the same quantile of the targets), i.e. "the k-th brightest
input should become the k-th brightest finished photo". It uses only the two marginals, like the critic.

Brightness is ``log2`` of the mean linear luminance (the paper's weights, ``filters.LUM_*``): of the linear input
as it is, and of a state or target read as display-encoded sRGB (what the agent's finished outputs are).

With ``white_point`` (recipe ``anchor_white_point``; not in the paper) the anchored statistic is the mean of two
levels, ``(b + w) / 2``, where ``w`` is the log2 white level (the 99.5th percentile of linear luminance), and each
episode's anchor is the mean of the quantile map's brightness and the targets' median white level. Finished
photos place their highlights more alike than their mean brightness (on the shared photos' training half the white
level's spread across photos is 0.40 stops against the mean's 0.72), and an input's white level moves with its
unknown exposure just as its mean does: a second reading of how bright the photo should be
(training/error_split.py, ``map_and_white_point``). The anchor stays one number per episode: the potential asks
that the output's brightness above its map plus its white level above the targets' be zero. As a training anchor
it did not help the default model's task (docs/training.md, "The white level").

The reward gets the potential-based term ``w (phi(s') - phi(s))`` with ``phi(s) = -|b(s) - anchor|``: its sum over
an episode is the finished image's distance in stops minus the input's (a constant), so it pulls only the final
brightness, and it gives every step's parameters a gradient through the differentiable filter.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import filters as F
from ..imageio import transfer as T

_FLOOR = 1e-6  # luminance floor: a black image has brightness log2(1e-6), not -inf
WHITE_QUANTILE = 0.995  # the white level: luminance under which 99.5 % of a photo's pixels lie


def _lum_plane(x: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W) -> (B,H*W)`` luminance."""
    return (F.LUM_R * x[:, 0] + F.LUM_G * x[:, 1] + F.LUM_B * x[:, 2]).flatten(1)


def _lum(x: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W) -> (B,)`` mean luminance."""
    return _lum_plane(x).mean(1)


def _white(x: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)`` linear -> ``(B,)`` log2 white level (differentiable: the quantile interpolates two pixels)."""
    return torch.log2(torch.quantile(_lum_plane(x), WHITE_QUANTILE, dim=1).clamp_min(_FLOOR))


def _decode(img: torch.Tensor) -> torch.Tensor:
    """Display-encoded sRGB -> linear, values clipped to [0, 1] as the renderer's output is: the differentiable
    copy of :func:`exposure_engine.imageio.transfer.srgb_to_linear` (the same constants)."""
    y = img.clamp(0.0, 1.0)
    return torch.where(y <= T.DECODE_KNEE, y / T.SRGB_SLOPE,
                       ((y + T.SRGB_A) / (1 + T.SRGB_A)).clamp_min(1e-12) ** T.SRGB_GAMMA)


def linear_log2_brightness(img: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)`` linear RGB -> ``(B,)`` log2 mean luminance."""
    return torch.log2(_lum(img.clamp(0.0, 1.0)).clamp_min(_FLOOR))


def display_log2_brightness(img: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)`` display-encoded sRGB -> ``(B,)`` log2 mean linear luminance (differentiable: the exact sRGB
    decoding, values clipped to [0, 1] as the renderer's output is)."""
    return torch.log2(_lum(_decode(img)).clamp_min(_FLOOR))


def linear_log2_white(img: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)`` linear RGB -> ``(B,)`` log2 white level (:data:`WHITE_QUANTILE` of luminance)."""
    return _white(img.clamp(0.0, 1.0))


def display_log2_white(img: torch.Tensor) -> torch.Tensor:
    """``(B,3,H,W)`` display-encoded sRGB -> ``(B,)`` log2 linear white level (differentiable)."""
    return _white(_decode(img))


def display_level(img: torch.Tensor, white_point: bool = False) -> torch.Tensor:
    """The anchored statistic of display-encoded states ``(B,3,H,W) -> (B,)``: log2 brightness, or with
    ``white_point`` the mean of log2 brightness and log2 white level."""
    b = display_log2_brightness(img)
    return b if not white_point else 0.5 * (b + display_log2_white(img))


def _hwc(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(crops, np.float32).transpose(0, 3, 1, 2)))


class BrightnessAnchor:
    """The quantile map from input brightness to target brightness: ``N_LEVELS`` quantiles of each set, and
    piecewise-linear interpolation between them (input quantile -> the same quantile of the targets).

    Fitted with :meth:`fit`; :meth:`to_dict` / :meth:`from_dict` store it (the trainer writes it into the model's
    config.json). Calling it on linear input images ``(B,3,S,S)`` gives their anchors ``(B,)`` in log2 brightness;
    inputs darker or brighter than every training input get the darkest or brightest target's brightness. With a
    ``white_level`` (the targets' median log2 white level; ``fit(..., white_point=True)``) the anchors are the mean
    of that brightness and the white level, for :func:`display_level` with ``white_point``."""

    N_LEVELS = 101

    def __init__(self, input_levels, target_levels, white_level: float | None = None):
        self.white_level = None if white_level is None else float(white_level)
        self.input_levels = np.asarray(input_levels, np.float64)
        self.target_levels = np.asarray(target_levels, np.float64)
        if self.input_levels.shape != self.target_levels.shape or self.input_levels.ndim != 1:
            raise ValueError("the brightness anchor needs as many input as target levels")
        if np.any(np.diff(self.input_levels) < 0) or np.any(np.diff(self.target_levels) < 0):
            raise ValueError("the brightness anchor's levels must be sorted")

    @classmethod
    def fit(cls, inputs: np.ndarray, targets: np.ndarray, white_point: bool = False) -> "BrightnessAnchor":
        """From training crops: ``inputs`` ``(N,H,W,3)`` linear, ``targets`` ``(M,H,W,3)`` display sRGB."""
        if len(inputs) < 2 or len(targets) < 2:
            raise ValueError("the brightness anchor needs at least two input and two target crops")
        with torch.no_grad():
            b_in = linear_log2_brightness(_hwc(inputs)).numpy().astype(np.float64)
            b_tg = display_log2_brightness(_hwc(targets)).numpy().astype(np.float64)
            white = float(np.median(display_log2_white(_hwc(targets)).numpy())) if white_point else None
        return cls.from_values(b_in, b_tg, white)

    @classmethod
    def from_values(cls, inputs, targets, white_level: float | None = None) -> "BrightnessAnchor":
        """The map between two sets of values (``N_LEVELS`` quantiles of each), e.g. log2 brightnesses."""
        q = np.linspace(0.0, 1.0, cls.N_LEVELS)
        return cls(np.quantile(np.asarray(inputs, np.float64), q), np.quantile(np.asarray(targets, np.float64), q),
                   white_level)

    def to_dict(self) -> dict:
        d = {"input_levels": [round(float(v), 5) for v in self.input_levels],
             "target_levels": [round(float(v), 5) for v in self.target_levels]}
        return d if self.white_level is None else {**d, "white_level": round(self.white_level, 5)}

    @classmethod
    def from_dict(cls, d: dict) -> "BrightnessAnchor":
        return cls(d["input_levels"], d["target_levels"], d.get("white_level"))

    def of_log2(self, b: np.ndarray) -> np.ndarray:
        """Anchors (log2 brightness) of inputs of log2 brightness ``b`` (any shape)."""
        return np.interp(np.asarray(b, np.float64), self.input_levels, self.target_levels)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            b = linear_log2_brightness(images).cpu().numpy()
        a = self.of_log2(b)
        if self.white_level is not None:
            a = 0.5 * (a + self.white_level)
        return torch.from_numpy(a.astype(np.float32))


def potential(img: torch.Tensor, anchor: torch.Tensor, white_point: bool = False) -> torch.Tensor:
    """``phi(s) = -|level(s) - anchor|`` in stops, ``(B,3,S,S), (B,) -> (B,)`` (the state read as display sRGB;
    the level is :func:`display_level`)."""
    return -(display_level(img, white_point) - anchor).abs()


__all__ = ["BrightnessAnchor", "WHITE_QUANTILE", "display_level", "display_log2_brightness", "display_log2_white",
           "linear_log2_brightness", "linear_log2_white", "potential"]
