#!/bin/sh
# Regenerate docs/images/gimp-dialog.png and docs/images/gimp-layers.png: the real GIMP 3 GUI under Xvfb inside
# the chroot of .ci/build-gimp-chroot.sh (built with GIMP_CHROOT_SCREENSHOTS=1), driving the plug-in as a user
# would (dialog, OK), with a daemon already serving on $SERVER (e.g. `exposure-engine serve --untrained
# --bind tcp://127.0.0.1:5592`). Run as root from the repository root:
#   SERVER=tcp://127.0.0.1:5592 tests/integration/gimp/screenshots.sh path/to/photo.jpg [sequence.json]
# With a sequence file, the dialog's "Sequence file" field names it (docs/gimp.md shows such a run: the untrained
# policy's edits are not meant to look good); without one, the model (style "untrained") predicts.
set -eu
ROOT="${GIMP_CHROOT:-/opt/gimp3-chroot}"
SERVER="${SERVER:-tcp://127.0.0.1:5557}"
PHOTO="$1"
OUT="$(pwd)/docs/images"
W=/srv/exposure-shots
rm -rf "$ROOT$W"; mkdir -p "$ROOT$W" "$OUT"
. .venv/bin/activate 2>/dev/null || true
python -c "from exposure_engine.installers import gimp; gimp.install('$ROOT$W/profile')"
printf '(show-welcome-dialog no)\n(show-tips no)\n' > "$ROOT$W/profile/gimprc"
cp "$PHOTO" "$ROOT$W/photo.jpg"
SEQ_ARG=""
if [ -n "${2:-}" ]; then cp "$2" "$ROOT$W/sequence.json"; SEQ_ARG="$W/sequence.json"; fi
cat > "$ROOT$W/open.py" <<PY
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio
img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("$W/photo.jpg"))
Gimp.Display.new(img)
proc = Gimp.get_pdb().lookup_procedure("python-fu-exposure-auto-retouch")
cfg = proc.create_config()
cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
cfg.set_property("image", img)
cfg.set_core_object_array("drawables", [img.get_layers()[0]])
cfg.set_property("style", "untrained")
cfg.set_property("seed", 7)
cfg.set_property("server", "$SERVER")
cfg.set_property("sequence", "$SEQ_ARG")
proc.run(cfg)
PY
X="chroot $ROOT env DISPLAY=:98"
chroot "$ROOT" Xvfb :98 -screen 0 1600x1000x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
sleep 2
chroot "$ROOT" env HOME=/root DISPLAY=:98 GIMP3_DIRECTORY=$W/profile gimp-3.0 --no-splash \
    --batch-interpreter=python-fu-eval -b "exec(open('$W/open.py').read())" >/dev/null 2>&1 &
GIMP=$!
trap 'kill $GIMP $XVFB 2>/dev/null || true' EXIT
wait_for() {  # a visible window whose name matches $1
    for _ in $(seq 120); do
        id=$($X xdotool search --onlyvisible --name "$1" 2>/dev/null | head -n1) && [ -n "$id" ] && { echo "$id"; return; }
        sleep 1
    done
    echo "no window named $1" >&2; exit 1
}
MAIN=$(wait_for " – GIMP")
$X xdotool windowmove "$MAIN" 0 0 windowsize "$MAIN" 1600 1000
sleep 2
# Widen the right-hand docks (layer names are long): drag the pane separator to the left.
$X xdotool mousemove 1366 500 mousedown 1 mousemove 1200 500 mousemove 1050 500 mouseup 1
$X xdotool mousemove 1590 990  # no tooltip over the dialog
DIALOG=$(wait_for "^Exposure Auto-Retouch")
sleep 3
$X xdotool windowmove "$DIALOG" 560 250
sleep 5
$X import -window "$DIALOG" "$W/dialog.png"
$X xdotool windowfocus "$DIALOG" key Return
for _ in $(seq 120); do  # the run is over when the layers exist (title: "... 7 layers")
    $X xdotool getwindowname "$MAIN" | grep -q "[2-9] layers" && break
    sleep 1
done
sleep 3
$X xdotool mousemove 1000 15
sleep 1
$X import -window root "$W/layers.png"
cp "$ROOT$W/dialog.png" "$OUT/gimp-dialog.png"
cp "$ROOT$W/layers.png" "$OUT/gimp-layers.png"
rm -rf "$ROOT$W"
echo "wrote $OUT/gimp-dialog.png $OUT/gimp-layers.png"
