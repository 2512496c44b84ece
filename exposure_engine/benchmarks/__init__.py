"""One module per ``exposure-engine bench NAME`` benchmark, each with ``register(subparsers)``.

Benchmarks measure side by side in one run and report medians and ratios (no timing assertions in tests).
"""
