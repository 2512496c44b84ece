"""Styles: the models a daemon serves, each loaded once and shared by every request, and the device they run on.

A style is the name of a model folder (``models/<name>/`` holding ``policy.pt`` + ``config.json``,
see :mod:`exposure_engine.agent.policy`). Folders are found when the daemon starts and again when a request
names a style not seen yet, so dropping a new model folder in place needs no restart.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .protocol import Code, ProtocolError

if TYPE_CHECKING:  # torch stays out of module import: the CLI's --help must be fast
    from ..agent.policy import Policy

DEFAULT_STYLE = "default"
# A style names a folder: no separators, no "..", nothing a shell or a URL would mangle.
_STYLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def model_roots(extra: Path | None = None) -> list[Path]:
    """Where model folders are looked for, first match wins: ``extra`` (``serve --models DIR``), then the same
    folders as ``exposure-engine retouch`` (``$EXPOSURE_ENGINE_MODELS``, the package's and the checkout's
    ``models/``)."""
    from ..retouch import model_roots as retouch_roots

    return ([Path(extra)] if extra is not None else []) + retouch_roots()


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "policy.pt").is_file() or (path / "config.json").is_file())


class Styles:
    """Thread-safe registry: style name -> loaded :class:`Policy` (on ``device``).

    roots: folders holding model folders, first match wins (e.g. :func:`model_roots`); empty: only ``policies``.
    policies: already built policies by style name (tests, ``serve --untrained``); they are moved to ``device``.
    """

    def __init__(self, roots: Sequence[Path] = (), device: str = "cpu", policies: dict[str, "Policy"] | None = None):
        self.roots = [Path(r) for r in roots or ()]
        self.device = device
        self._loaded: dict[str, Policy] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        for name, policy in (policies or {}).items():
            self._loaded[name] = policy.to(device)

    # --- discovery ----------------------------------------------------------------------------------------------
    def folders(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for root in self.roots:
            if root.is_dir():
                for p in sorted(root.iterdir()):
                    if p.name not in found and _STYLE_RE.match(p.name) and is_model_folder(p):
                        found[p.name] = p
        return found

    def names(self) -> list[str]:
        return sorted(set(self.folders()) | set(self._loaded))

    @property
    def default(self) -> str | None:
        """``default`` when present, else the only/first style by name, else None."""
        names = self.names()
        return DEFAULT_STYLE if DEFAULT_STYLE in names else (names[0] if names else None)

    # --- loading ------------------------------------------------------------------------------------------------
    def get(self, name: str | None) -> tuple[str, "Policy"]:
        """``(style, policy)`` for ``name`` (None: the default style); loads it on first use.

        Raises :class:`ProtocolError` ``unknown_style`` or ``model_error`` (with the file and the reason)."""
        if name is None:
            name = self.default
            if name is None:
                where = ", ".join(map(str, self.roots)) or "(no models folder)"
                raise ProtocolError(Code.UNKNOWN_STYLE, f"no model is installed (looked in {where}); train one, "
                                                        "or pass --untrained for an untrained policy")
        policy = self._loaded.get(name)
        if policy is not None:
            return name, policy
        if not _STYLE_RE.match(name):
            raise ProtocolError(Code.UNKNOWN_STYLE, f"style {name[:70]!r} is not a valid model folder name")
        folder = self.folders().get(name)
        if folder is None:
            raise ProtocolError(Code.UNKNOWN_STYLE,
                                f"no style {name!r}; available: {', '.join(self.names()) or 'none'}")
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:  # one load per style even when several requests ask for it at once
            policy = self._loaded.get(name)
            if policy is None:
                from ..agent.policy import ModelError, Policy

                try:
                    policy = Policy.load(folder, device=self.device)
                except ModelError as e:
                    raise ProtocolError(Code.MODEL_ERROR, f"style {name!r}: {e}") from None
                self._loaded[name] = policy
        return name, policy

    def preload(self) -> dict[str, str]:
        """Load every style now; returns ``{style: error message}`` for those that failed."""
        errors = {}
        for name in self.names():
            try:
                self.get(name)
            except ProtocolError as e:
                errors[name] = e.message
        return errors

    def describe(self) -> list[dict[str, Any]]:
        """For ``info``: name, whether loaded, content hash (sha256 of the weights) and device of each style."""
        out = []
        for name in self.names():
            p = self._loaded.get(name)
            out.append({"name": name, "loaded": p is not None,
                        "content_hash": p.content_hash if p is not None else None,
                        "model": p.name if p is not None else None,
                        "device": str(p.device) if p is not None else self.device})
        return out
