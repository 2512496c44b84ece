"""Which torch device runs the networks: one rule for the daemon, ``predict`` and ``train``.

``auto`` takes the GPU when torch can use one (CUDA) and the CPU otherwise; asking for ``cuda`` where there is
none is an error, not a silent fallback, so a user who paid for a GPU run knows when it did not happen.
"""
from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(requested: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` (or ``cuda:N``) without a GPU is an
    error (ValueError)."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not cuda_available():
            raise ValueError(f"--device {requested}: no CUDA GPU is available to torch here "
                             "(use --device auto or cpu)")
        return requested
    raise ValueError(f"--device must be auto, cpu or cuda, not {requested!r}")
