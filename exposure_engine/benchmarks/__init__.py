"""One module per ``exposure-engine bench NAME`` benchmark, each with ``register(subparsers)``.

Benchmarks measure side by side in one run and report medians and ratios (no timing assertions in tests).
"""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says: every benchmark prints it, as the
    same code's timings differ by CPU (inference's prepacked oneDNN path: 2x faster on one, 13x slower on another,
    docs/training.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_cpu() -> str:
    """The CPU instruction set torch's kernels were dispatched for here (e.g. ``AVX2``, ``AVX512``)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # older torch
        return "unknown"
