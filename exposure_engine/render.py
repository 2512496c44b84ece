"""Full-resolution renderer: an edit sequence applied to an image of any size.

All eight filters are pointwise, so the whole sequence is fused into one pass: each pixel is read once, run
through every step in registers (the ``pixel`` kernels of :mod:`exposure_engine.filters`) and written once.
No intermediate images exist, rows are spread over all cores by numba, and memory beyond the output array is
a few hundred bytes per thread; ``out=image`` renders in place (no extra memory at all), which is how 100 MP
images are handled. docs/performance.md has the measurements.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from . import filters as F
from .sequence import EditSequence, as_sequence

# The dispatch below names each filter's pixel kernel; tests/test_render.py checks it against the registry so
# that a filter added to filters.py but not here fails loudly.
_EXPOSURE, _GAMMA, _WB, _SAT, _TONE, _COLOR, _CONTRAST, _BW = (f.index for f in F.FILTERS)
_exposure_px, _gamma_px, _wb_px, _saturation_px = (F.EXPOSURE.pixel, F.GAMMA.pixel, F.WHITE_BALANCE.pixel,
                                                    F.SATURATION.pixel)
_tone_px, _color_px, _contrast_px, _bw_px = F.TONE_CURVE.pixel, F.COLOR_CURVES.pixel, F.CONTRAST.pixel, F.BLACK_AND_WHITE.pixel


@numba.njit(parallel=True, cache=True, nogil=True)
def _render_rows(src, dst, ids, params, clip):
    h = src.shape[0]
    w = src.shape[1]
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in numba.prange(h):
        for x in range(w):
            r = src[y, x, 0]
            g = src[y, x, 1]
            b = src[y, x, 2]
            for s in range(ids.shape[0]):
                fid = ids[s]
                p = params[s]
                if fid == _EXPOSURE:
                    r, g, b = _exposure_px(r, g, b, p)
                elif fid == _GAMMA:
                    r, g, b = _gamma_px(r, g, b, p)
                elif fid == _WB:
                    r, g, b = _wb_px(r, g, b, p)
                elif fid == _SAT:
                    r, g, b = _saturation_px(r, g, b, p)
                elif fid == _TONE:
                    r, g, b = _tone_px(r, g, b, p)
                elif fid == _COLOR:
                    r, g, b = _color_px(r, g, b, p)
                elif fid == _CONTRAST:
                    r, g, b = _contrast_px(r, g, b, p)
                elif fid == _BW:
                    r, g, b = _bw_px(r, g, b, p)
            if clip:
                r = min(max(r, zero), one)
                g = min(max(g, zero), one)
                b = min(max(b, zero), one)
            dst[y, x, 0] = r
            dst[y, x, 1] = g
            dst[y, x, 2] = b


DISPATCHED = frozenset({_EXPOSURE, _GAMMA, _WB, _SAT, _TONE, _COLOR, _CONTRAST, _BW})


def render(image: np.ndarray, sequence: EditSequence | dict | str, *, clip: bool = True,
           out: np.ndarray | None = None) -> np.ndarray:
    """Apply ``sequence`` to ``image``.

    image: ``(H, W, 3)`` float32 linear-light RGB (sRGB primaries), any size; float64 is converted.
    sequence: an :class:`EditSequence`, a dict as loaded from JSON, or a path to a JSON file.
    clip: clamp the result to [0, 1], the display range the format promises for the last step's output;
        ``clip=False`` returns the formulas' raw values (what the torch filters give).
    out: optional ``(H, W, 3)`` float32 C-contiguous destination; ``out=image`` renders in place.
    Returns ``(H, W, 3)`` float32 display-encoded sRGB.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype.kind != "f":
        raise TypeError(f"expected linear float32 pixels, got {image.dtype}: decode integer images with "
                        "exposure_engine.imageio first (they are usually sRGB-encoded)")
    src = np.ascontiguousarray(image, dtype=np.float32)
    if out is None:
        out = np.empty_like(src)
    elif out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 array of the image's shape")
    ids, params = as_sequence(sequence).packed()
    _render_rows(src, out, ids, params, bool(clip))
    return out


def render_torch(image: torch.Tensor, sequence: EditSequence | dict | str, *, clip: bool = False) -> torch.Tensor:
    """The same sequence through the differentiable torch filters: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``.

    Used by training-side code and as the reference the fused renderer is tested against.
    """
    ids, params = as_sequence(sequence).packed()
    x = image
    for fid, p in zip(ids, params):
        f = F.FILTERS[int(fid)]
        pp = torch.as_tensor(p[: f.n_packed], dtype=x.dtype, device=x.device).expand(x.shape[0], -1)
        x = f.apply(x, pp)
    return x.clamp(0.0, 1.0) if clip else x


def set_threads(n: int | None) -> None:
    """Limit the renderer's threads (default: all cores)."""
    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)
