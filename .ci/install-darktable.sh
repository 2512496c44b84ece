#!/bin/sh
# Install darktable 4.2 (Debian 12), a virtual X server and Lua 5.4 for the darktable tests
# (tests/integration/test_darktable.py; tests/test_darktable_lua.py uses lua5.4).
# Idempotent: does nothing when everything is already there. WITH_SCREENSHOT_TOOLS=1 also installs xwd.
# Needs root (or sudo) and the Debian archive. About 1 minute and +260 MB on a fresh machine.
set -eu

need=""
command -v darktable-cli >/dev/null 2>&1 || need="$need darktable"
command -v xvfb-run >/dev/null 2>&1 || need="$need xvfb xauth"
command -v lua5.4 >/dev/null 2>&1 || need="$need lua5.4"
# xwd: only for the documentation screenshots (tests/integration/darktable/screenshots.py), on request.
if [ "${WITH_SCREENSHOT_TOOLS:-0}" = 1 ]; then
    command -v xwd >/dev/null 2>&1 || need="$need x11-apps"
fi

if [ -z "$need" ]; then
    echo "install-darktable: already installed ($(darktable-cli --version 2>/dev/null | head -n 1))"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-darktable: installing$need"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
darktable-cli --version | head -n 1
