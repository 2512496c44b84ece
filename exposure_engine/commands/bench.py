"""``exposure-engine bench NAME``: benchmarks found in exposure_engine/benchmarks/ (one module each)."""
from __future__ import annotations

import importlib
import pkgutil


def register(sub) -> None:
    from .. import benchmarks

    p = sub.add_parser("bench", help="measure speed, memory and quality (see docs/performance.md)")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{benchmarks.__name__}.{info.name}").register(bsub)
