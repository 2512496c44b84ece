"""exposure-engine: white-box automatic photo retouching (Exposure, Hu et al., TOG 2018)."""
from __future__ import annotations

__version__ = "0.1.0"

from .sequence import EditSequence, SequenceError, Step  # noqa: E402


def render(image, sequence, **kwargs):
    """See :func:`exposure_engine.render.render` (imported lazily: numba compiles on first use)."""
    from .render import render as _render

    return _render(image, sequence, **kwargs)


__all__ = ["EditSequence", "SequenceError", "Step", "render", "__version__"]
