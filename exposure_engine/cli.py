"""The ``exposure-engine`` command: a thin shell over functions that tests call directly.

Each subcommand lives in its own module under ``exposure_engine/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed namespace; it returns
an exit code). Modules are found by name, so adding a command never edits this file.
"""
from __future__ import annotations

import os

# Before anything imports torch: OpenMP threads that spin-wait made training ~10x slower on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402

from . import __version__


class CLIError(Exception):
    """A user-facing failure: printed as one line on stderr, exit code 2 (or ``code``)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def device_arg(requested: str | None) -> str:
    """:func:`exposure_engine.devices.resolve_device` for a command's ``--device``: an impossible choice (``cuda``
    without a GPU) is a CLIError, one line and exit code 2."""
    from .devices import resolve_device

    try:
        return resolve_device(requested)
    except ValueError as e:
        raise CLIError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="exposure-engine",
        description="White-box automatic photo retouching: learned edit sequences for GIMP and darktable.")
    parser.add_argument("--version", action="version", version=f"exposure-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"exposure-engine {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run as ``python -m exposure_engine.cli`` this file is __main__, and its CLIError would be a different class
    # from the one the commands raise: dispatch through the package module instead.
    from exposure_engine.cli import main as _main

    sys.exit(_main())
