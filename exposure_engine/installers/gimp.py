"""Install the GIMP 3 plug-in into a user's GIMP profile (``exposure-engine plugins install gimp``).

GIMP 3 registers a Python plug-in only when it sits at ``<profile>/plug-ins/<name>/<name>.py`` with the run bit
set (a folder name differing from the file stem, or a missing run bit, is silently ignored: measured on GIMP
3.0.4). The profile is ``$GIMP3_DIRECTORY`` when set, else the platform's default ``GIMP/3.0`` folder.

Next to the plug-in, ``exposure-auto-retouch.json`` records how to start this engine's daemon
(``[python, -m, exposure_engine.cli, serve]`` of the installing interpreter): GIMP's own Python cannot import
``exposure_engine``, and GIMP started from a desktop menu rarely has a virtual environment on its PATH.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

NAME = "exposure-auto-retouch"
PROFILE_ENV = "GIMP3_DIRECTORY"
CONFIG_FILE = f"{NAME}.json"  # read by plugins/gimp/exposure-auto-retouch/daemon_client.py (load_config)
PLUGIN_FILES = (f"{NAME}.py", "daemon_client.py")


class InstallError(RuntimeError):
    """The plug-in cannot be installed (source files missing, profile not writable); the message says which."""


def profile_dir(env: dict | None = None) -> Path:
    """The GIMP 3 profile folder: ``$GIMP3_DIRECTORY``, else the per-platform default."""
    env = os.environ if env is None else env
    if env.get(PROFILE_ENV):
        return Path(env[PROFILE_ENV]).expanduser()
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0"
    if sys.platform.startswith("win"):
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP" / "3.0"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP" / "3.0"


def plugin_source() -> Path:
    """The folder holding the plug-in's files in this installation of the engine."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "_plugins" / "gimp" / NAME,  # packaged copy (wheel)
                  here.parents[2] / "plugins" / "gimp" / NAME]   # source checkout / editable install
    for c in candidates:
        if all((c / f).is_file() for f in PLUGIN_FILES):
            return c
    raise InstallError(f"the GIMP plug-in files ({', '.join(PLUGIN_FILES)}) are not part of this installation; "
                       f"looked in {', '.join(map(str, candidates))}")


def plugin_dir(profile: str | os.PathLike | None = None) -> Path:
    """Where the plug-in goes: ``<profile>/plug-ins/exposure-auto-retouch/`` (profile: :func:`profile_dir`)."""
    return (Path(profile) if profile is not None else profile_dir()) / "plug-ins" / NAME


def install(profile: str | os.PathLike | None = None, *, serve_command: list[str] | None = None,
            server: str | None = None) -> Path:
    """Copy the plug-in into ``profile`` (default :func:`profile_dir`); idempotent. Returns the main file.

    serve_command: how the plug-in starts a daemon when none answers (default: this Python's
        ``-m exposure_engine.cli serve``); server: a default daemon address to record (default: the plug-in's,
        tcp://127.0.0.1:5557).
    """
    src = plugin_source()
    dst = plugin_dir(profile)
    try:
        dst.mkdir(parents=True, exist_ok=True)
        for f in PLUGIN_FILES:
            shutil.copyfile(src / f, dst / f)
        main = dst / f"{NAME}.py"
        main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        config: dict = {"serve": serve_command or [sys.executable, "-m", "exposure_engine.cli", "serve"]}
        if server:
            config["server"] = server
        (dst / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    except OSError as e:
        raise InstallError(f"cannot install the GIMP plug-in into {dst}: {e}") from None
    return main


def uninstall(profile: str | os.PathLike | None = None) -> bool:
    """Remove the plug-in folder from ``profile``; returns False when it was not installed."""
    dst = plugin_dir(profile)
    if not dst.exists():
        return False
    try:
        shutil.rmtree(dst)
    except OSError as e:
        raise InstallError(f"cannot remove the GIMP plug-in from {dst}: {e}") from None
    return True


def status(profile: str | os.PathLike | None = None) -> dict:
    """``{"installed": bool, "path": str, "current": bool}``: current = same files as this engine's copy."""
    dst = plugin_dir(profile)
    main = dst / f"{NAME}.py"
    installed = main.is_file() and os.access(main, os.X_OK)
    current = False
    if installed:
        try:
            src = plugin_source()
            current = all((dst / f).is_file() and (dst / f).read_bytes() == (src / f).read_bytes()
                          for f in PLUGIN_FILES)
        except InstallError:
            pass
    return {"installed": installed, "path": str(main), "current": current}
