"""Shared pytest fixtures. Keep them generic: several test modules use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real-EM data folder: env ``EMDEBLUR_SHARED_DATA`` or ``<repo>/../shared/data``;
    None when absent."""
    env = os.environ.get("EMDEBLUR_SHARED_DATA")
    cand = Path(env) if env else (REPO / ".." / "shared" / "data")
    cand = cand.resolve()
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real-EM data folder; skips the test when it is not available."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared EM data folder not available (set EMDEBLUR_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    """Paths of the bundled sample section (section, ground_truth, tiles json, license)."""
    from napari_emdeblur._sample_data import sample_paths

    return sample_paths()
