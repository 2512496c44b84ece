"""exposure-engine: white-box automatic photo retouching (Exposure, Hu et al., TOG 2018)."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["EditSequence", "SequenceError", "Step", "render", "__version__"]


def __getattr__(name: str):
    # Lazy: the filters import torch and numba, which the CLI's --help, the daemon client and the plug-in
    # installers do not need.
    if name in ("EditSequence", "SequenceError", "Step"):
        from . import sequence

        return getattr(sequence, name)
    if name == "render":
        from .renderer import render

        return render
    raise AttributeError(f"module 'exposure_engine' has no attribute {name!r}")
