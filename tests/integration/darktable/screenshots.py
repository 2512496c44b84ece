"""Make the screenshots of docs/darktable.md (run by hand; needs darktable, Xvfb, xwd):

    python tests/integration/darktable/screenshots.py PHOTO SEQUENCE.json docs/images

Installs the plug-in into a temporary darktable config, starts darktable's GUI on a private Xvfb display, imports
PHOTO, applies SEQUENCE with the plug-in (native mode), and captures (1) the lighttable with the "exposure
auto-retouch" module expanded and (2) the darkroom with the resulting history stack. darktable's Lua side and
this script take turns through marker files; xwd takes the pictures.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from xwd2png import read_xwd  # noqa: E402

from exposure_engine.installers import darktable as installer  # noqa: E402

LUA = r"""
local dt = require "darktable"
local sync = os.getenv("SHOT_SYNC")
local function wait_for(name)
  for _ = 1, 600 do
    local f = io.open(sync .. "/" .. name, "r")
    if f then f:close() return end
    dt.control.sleep(100)
  end
end
local function mark(name) local f = io.open(sync .. "/" .. name, "w") f:write("1") f:close() end
dt.control.sleep(3000)
local img = dt.database.import(os.getenv("SHOT_PHOTO"))
dt.gui.selection({ img })
dt.gui.libs["exposure_auto_retouch"].expanded = true
local plugin = package.loaded["exposure_auto_retouch"]
plugin.widgets.sequence.value = os.getenv("SHOT_SEQ")
plugin.apply_sequence_file({ img }, os.getenv("SHOT_SEQ"), "native")
dt.control.sleep(2000)
mark("lighttable")
wait_for("lighttable.done")
dt.gui.current_view(dt.gui.views.darkroom)
dt.control.sleep(1000)
dt.gui.views.darkroom.display_image(img)
dt.gui.libs["history"].expanded = true
dt.control.sleep(6000)
mark("darkroom")
wait_for("darkroom.done")
dt.gui.action("global/quit", 0, "", "", 1.0)
"""


def main() -> None:
    from PIL import Image

    photo, sequence, outdir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), Path(sys.argv[3])
    outdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dtshots"))
    shutil.copy(photo, work / photo.name)
    installer.install(work / "config")
    (work / "drive.lua").write_text(LUA)
    display = ":93"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1400x900x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = {**os.environ, "DISPLAY": display, "SHOT_SYNC": str(work), "SHOT_PHOTO": str(work / photo.name),
           "SHOT_SEQ": str(sequence)}
    try:
        time.sleep(1)
        dt_proc = subprocess.Popen(
            ["timeout", "-k", "5", "300", "darktable", "--library", ":memory:", "--configdir", str(work / "config"),
             "--conf", "write_sidecar_files=never", "--conf", "ui_last/window_w=1400",
             "--conf", "ui_last/window_h=900", "--conf", "ui_last/window_x=0", "--conf", "ui_last/window_y=0",
             "--luacmd", f'dofile("{work / "drive.lua"}")'], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for name in ("lighttable", "darkroom"):
            while not (work / name).exists():
                if dt_proc.poll() is not None:
                    raise SystemExit(f"darktable exited before the {name} screenshot")
                time.sleep(0.2)
            shot = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True,
                                  check=True).stdout
            Image.fromarray(read_xwd(shot)).save(outdir / f"darktable-{name}.png", optimize=True)
            print(f"wrote {outdir / f'darktable-{name}.png'}")
            (work / f"{name}.done").write_text("1")
        dt_proc.wait(timeout=120)
    finally:
        xvfb.terminate()
        xvfb.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
