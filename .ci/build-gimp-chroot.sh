#!/bin/sh
# Build (or refresh) a Debian 13 "trixie" chroot holding GIMP 3 and the Python modules the
# exposure-auto-retouch plug-in imports, for tests/integration/test_gimp.py.
#
#   sudo .ci/build-gimp-chroot.sh                 # -> ${GIMP_CHROOT:-/opt/gimp3-chroot}
#   GIMP_CHROOT=/srv/gimp3 .ci/build-gimp-chroot.sh
#   GIMP_CHROOT_SCREENSHOTS=1 .ci/build-gimp-chroot.sh   # + Xvfb/ImageMagick for docs/gimp.md screenshots
#
# Why a chroot: Debian 12 (the CI host) ships GIMP 2.10 without Python-Fu; GIMP 3 comes from trixie, and a
# chroot keeps the host's apt sources untouched. Idempotent: a finished chroot is detected by a stamp file
# listing its packages, and a re-run only installs what is missing. Measured from scratch: ~70 s, ~780 MB.
# Needs root (debootstrap, chroot). No /proc or /dev mounts are needed for GIMP in batch mode.
set -eu

ROOT="${GIMP_CHROOT:-/opt/gimp3-chroot}"
# Use the mirror this host already uses (CI machines may only reach that one); Debian's CDN otherwise.
MIRROR="${DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR=$(grep -rhoE '(URIs:|^deb)[[:space:]]+[^[:space:]]*' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
             | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
MIRROR="${MIRROR%/}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"

PACKAGES="gimp python3-zmq python3-numpy"
if [ "${GIMP_CHROOT_SCREENSHOTS:-0}" = 1 ]; then
    PACKAGES="$PACKAGES xvfb xauth imagemagick xdotool fonts-dejavu-core adwaita-icon-theme dbus-x11"
fi
STAMP="$ROOT/.exposure-engine-chroot"

if [ "$(id -u)" != 0 ]; then
    echo "build-gimp-chroot: must run as root (debootstrap and chroot need it)" >&2
    exit 2
fi

# Other jobs on a shared host may hold the dpkg lock: wait for it instead of failing.
APT="apt-get -o DPkg::Lock::Timeout=600 -y -q"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PACKAGES" ] && [ -x "$ROOT/usr/bin/gimp-console-3.0" ]; then
    echo "build-gimp-chroot: $ROOT is up to date ($PACKAGES)"
    exit 0
fi

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        $APT install --no-install-recommends debootstrap
    fi
    echo "build-gimp-chroot: debootstrap trixie from $MIRROR into $ROOT"
    mkdir -p "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
fi

cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb $SECURITY trixie-security main
EOF

chroot "$ROOT" $APT update
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive $APT install --no-install-recommends $PACKAGES
chroot "$ROOT" apt-get clean
# The tests install the plug-in into per-run profiles under here.
mkdir -p "$ROOT/srv"
chroot "$ROOT" gimp-console-3.0 --version
printf '%s' "$PACKAGES" > "$STAMP"
echo "build-gimp-chroot: ready: $ROOT"
