"""``exposure-engine plugins install|uninstall|status darktable|gimp``: set up the editor plug-ins for this user.

Each editor has a module ``exposure_engine.installers.<editor>`` with ``install(folder=None)``,
``uninstall(folder=None)`` and ``status(folder=None)``; ``folder`` is the editor's config/profile folder
(darktable: its ``--configdir``; GIMP: its profile), defaulting to the editor's own default.
"""
from __future__ import annotations

import argparse

EDITORS = ("darktable", "gimp")


def register(sub) -> None:
    p = sub.add_parser(
        "plugins", help="install or remove the darktable / GIMP plug-ins for this user",
        description="Install, remove or inspect the editor plug-ins. Installing twice is harmless.",
        epilog="examples:\n"
               "  exposure-engine plugins install darktable\n"
               "  exposure-engine plugins install darktable --folder ~/.config/darktable-test\n"
               "  exposure-engine plugins uninstall gimp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument("editor", choices=EDITORS)
    p.add_argument("--folder", metavar="DIR",
                   help="the editor's configuration folder (darktable --configdir, GIMP profile); "
                        "default: the editor's default for this user")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib
    import json

    from ..cli import CLIError

    try:
        mod = importlib.import_module(f"exposure_engine.installers.{args.editor}")
    except ImportError as e:
        raise CLIError(f"no installer for {args.editor} in this engine ({e})") from None
    try:
        if args.action == "install":
            path = mod.install(args.folder)
            print(f"installed the {args.editor} plug-in: {path}")
            if args.editor == "darktable":
                print("restart darktable; the module 'exposure auto-retouch' is in the lighttable's right panel")
        elif args.action == "uninstall":
            removed = mod.uninstall(args.folder)
            print(f"removed the {args.editor} plug-in" if removed else f"the {args.editor} plug-in was not installed")
        else:
            print(json.dumps(mod.status(args.folder), indent=2, default=str))
    except getattr(mod, "InstallError", OSError) as e:
        raise CLIError(str(e)) from None
    return 0
