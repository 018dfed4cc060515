#!/usr/bin/env bash
# Quick start 2: set up .venv (idempotent), lint (ruff), type-check (mypy on the non-GUI packages) and
# run the whole test suite headless under Xvfb. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet src tests benchmarks scripts
.venv/bin/mypy
export QT_API=pyqt6 NAPARI_ASYNC=0 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python -m pytest -p no:cacheprovider "$@"
