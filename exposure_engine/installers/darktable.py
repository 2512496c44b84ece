"""Install the darktable Lua plug-in for the user (``exposure-engine plugins install darktable``).

darktable runs ``<config>/luarc`` at start-up (GUI only), and ``require "NAME"`` there loads
``<config>/lua/NAME.lua``. Installing copies ``exposure_auto_retouch.lua`` into ``<config>/lua/``, writes
``exposure_auto_retouch.engine`` beside it (the absolute path of this engine's ``exposure-engine`` command: darktable
started from a desktop menu rarely has a virtual environment on its PATH) and adds one marked ``require`` line to
luarc. Both steps are idempotent; uninstalling removes the files and that line only.

The config folder is ``--configdir`` when given, else darktable's default: ``$XDG_CONFIG_HOME/darktable`` or
``~/.config/darktable`` on Linux and macOS, ``%LOCALAPPDATA%\\darktable`` on Windows.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

NAME = "exposure_auto_retouch"
PLUGIN_FILE = f"{NAME}.lua"
ENGINE_FILE = f"{NAME}.engine"  # read by the plug-in as the default of its "engine command" preference
MARK = "-- added by exposure-engine plugins install darktable"
REQUIRE_LINE = f'require "{NAME}"  {MARK}'
_REQUIRE_RE = re.compile(r"""^\s*require\s*\(?\s*["']""" + NAME + r"""["']""")


class InstallError(RuntimeError):
    """The plug-in cannot be installed (source missing, folder not writable); the message says which."""


def config_dir(env: dict | None = None, platform: str | None = None) -> Path:
    """darktable's default configuration folder for this user (what ``darktable --configdir`` defaults to)."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "darktable"
    # darktable uses GLib's user config dir on Linux and macOS alike: $XDG_CONFIG_HOME or ~/.config
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "darktable"


def plugin_source() -> Path:
    """The plug-in's Lua file in this installation of the engine."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "_plugins" / "darktable" / PLUGIN_FILE,  # packaged copy (wheel)
                  here.parents[2] / "plugins" / "darktable" / PLUGIN_FILE]   # source checkout / editable install
    for c in candidates:
        if c.is_file():
            return c
    raise InstallError(f"the darktable plug-in ({PLUGIN_FILE}) is not part of this installation; looked in "
                       + ", ".join(map(str, candidates)))


def engine_command() -> str:
    """The absolute path of this installation's ``exposure-engine`` script, or the bare name as a fallback."""
    exe_dir = Path(sys.executable).parent
    for name in ("exposure-engine", "exposure-engine.exe"):
        if (exe_dir / name).is_file():
            return str(exe_dir / name)
    return shutil.which("exposure-engine") or "exposure-engine"


def _luarc_lines(luarc: Path) -> list[str]:
    try:
        return luarc.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def install(config: str | os.PathLike | None = None, *, engine: str | None = None) -> Path:
    """Install into darktable's config folder ``config`` (default :func:`config_dir`); idempotent.

    engine: the command the plug-in runs (default :func:`engine_command`). Returns the installed Lua file.
    """
    cfg = Path(config) if config is not None else config_dir()
    src = plugin_source()
    lua_dir = cfg / "lua"
    dst = lua_dir / PLUGIN_FILE
    luarc = cfg / "luarc"
    try:
        lua_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        (lua_dir / ENGINE_FILE).write_text((engine or engine_command()) + "\n", encoding="utf-8")
        lines = _luarc_lines(luarc)
        if not any(_REQUIRE_RE.match(line) for line in lines):
            lines.append(REQUIRE_LINE)
            luarc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:
        raise InstallError(f"cannot install into {cfg}: {e.strerror or e}") from None
    return dst


def uninstall(config: str | os.PathLike | None = None) -> bool:
    """Remove the plug-in and its luarc line (other lines untouched). Returns whether anything was removed."""
    cfg = Path(config) if config is not None else config_dir()
    removed = False
    try:
        for f in (cfg / "lua" / PLUGIN_FILE, cfg / "lua" / ENGINE_FILE):
            if f.exists():
                f.unlink()
                removed = True
        luarc = cfg / "luarc"
        lines = _luarc_lines(luarc)
        # Only the line we added (marked); a require the user wrote by hand is theirs to keep or remove.
        kept = [line for line in lines if not (_REQUIRE_RE.match(line) and MARK in line)]
        if len(kept) != len(lines):
            luarc.write_text("\n".join(kept) + ("\n" if kept else ""), encoding="utf-8")
            removed = True
    except OSError as e:
        raise InstallError(f"cannot uninstall from {cfg}: {e.strerror or e}") from None
    return removed


def status(config: str | os.PathLike | None = None) -> dict:
    """Where the plug-in is and whether luarc loads it."""
    cfg = Path(config) if config is not None else config_dir()
    lines = _luarc_lines(cfg / "luarc")
    return {"config_dir": str(cfg), "plugin": str(cfg / "lua" / PLUGIN_FILE),
            "installed": (cfg / "lua" / PLUGIN_FILE).is_file(),
            "luarc_loads_it": any(_REQUIRE_RE.match(line) for line in lines)}
