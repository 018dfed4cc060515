#!/usr/bin/env bash
# Quick start 1: set up .venv (idempotent) and open napari on the bundled sample section with the
# plugin's widgets docked. Extra arguments go to `emdeblur demo` (e.g. --screenshot out.png).
# Without a display it runs under Xvfb (then only --screenshot makes sense).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "[demo] no display: running under Xvfb" >&2
  exec xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/emdeblur demo "$@"
fi
exec .venv/bin/emdeblur demo "$@"
