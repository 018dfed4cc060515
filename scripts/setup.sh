#!/usr/bin/env bash
# Set up napari-emdeblur into .venv at the repository root (idempotent).
# - installs the few Debian/Ubuntu packages napari's Qt canvas needs when missing (xvfb, Mesa, xcb libs)
# - creates .venv with Python >= 3.11, installs the CPU build of torch first (an unpinned torch from PyPI
#   pulls several GB of CUDA packages), then the package with its Qt (PyQt6) and test extras.
# Re-running does nothing when the environment is already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_SPEC=${EMDEBLUR_TORCH_SPEC:-torch==2.13.0}

log() { printf '[setup] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- system packages
APT_PKGS=(xvfb xauth libgl1-mesa-dri libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libxrender1 libxi6)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    }
  fi
fi

# ---------------------------------------------------------------- python
PY=""
for cand in python3.13 python3.12 python3.11 python3; do
  # pyenv shims exist for versions that are not installed and print errors when run: stay quiet
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    PY=$cand; break
  fi
done
[ -n "$PY" ] || { echo "napari-emdeblur needs Python >= 3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv || { log "python venv module missing: installing python3-venv";
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO apt-get install -y -q python3-venv >/dev/null; "$PY" -m venv .venv; }
fi
VPY=$ROOT/.venv/bin/python
stamp=.venv/.emdeblur-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import napari_emdeblur, torch, napari' 2>/dev/null; then
  log ".venv is up to date"
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VPY" -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
# numpy before torch: a torch imported without numpy warns "Failed to initialize NumPy"
"$VPY" -c 'import numpy' 2>/dev/null || "$VPY" -m pip install -q "numpy>=1.24" 2>&1 | grep -v "^WARNING: Location" || true
if ! "$VPY" -c 'import torch' 2>/dev/null; then
  log "installing $TORCH_SPEC (CPU build first)"
  "$VPY" -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
  "$VPY" -c 'import torch' || {
    log "no local $TORCH_SPEC wheel: trying the CPU index"
    "$VPY" -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch; }
fi
log "installing napari-emdeblur (editable) with PyQt6 and test extras"
"$VPY" -m pip install -q -e ".[pyqt6,testing]" 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c 'import napari_emdeblur, torch, napari, PyQt6, pytestqt' 
echo "$want" > "$stamp"
log "done: $("$VPY" -c 'import torch, napari; print("torch", torch.__version__, "napari", napari.__version__)')"
