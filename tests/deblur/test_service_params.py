"""The correction service's parameter choices that need no model: inference window by selection."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_emdeblur.deblur.service import WHOLE_IMAGE_TILE, auto_tile_batch  # noqa: E402


def test_window_size_follows_what_is_corrected():
    cpu = torch.device("cpu")
    assert auto_tile_batch(cpu, qc_tile=256)[0] == 256 + 64  # a QC tile with its context margins
    assert auto_tile_batch(cpu, qc_tile=2048)[0] == 1024  # capped
    assert auto_tile_batch(cpu, qc_tile=256, whole=True)[0] == WHOLE_IMAGE_TILE == 512  # fewer, larger windows
    assert auto_tile_batch(cpu, requested_tile=384, whole=True)[0] == 384  # what the user asked for wins
    assert auto_tile_batch(cpu, requested_batch=3)[1] == 3
