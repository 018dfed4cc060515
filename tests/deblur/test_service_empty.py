"""The correction service never corrects a tile without tissue signal (the blur map's content check),
whatever the selection: the whole image or chosen tiles (flagged ones never include them: EMPTY is not CORRECT)."""

from __future__ import annotations

import numpy as np
from conftest import tiny_weights

from napari_emdeblur.deblur.selection import Selection
from napari_emdeblur.deblur.service import CorrectionParams, correct, iter_correct
from napari_emdeblur.io import load_section
from napari_emdeblur.qc.messages import Notice, TileResult


def test_empty_tiles_are_never_corrected(shared_data, tmp_path):
    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "088.png").data)[:512, :512].copy()
    rng = np.random.default_rng(0)
    img[256:, 256:] = np.clip(np.round(100 + 7 * rng.standard_normal((256, 256))), 0, 255).astype(np.uint8)  # resin
    img[:256, 256:] = 37  # flat
    weights = tiny_weights(tmp_path / "tiny.pt")
    # keep_sharp off: this sharp SBEM would pass the do-no-harm gate unchanged, and the test needs to see
    # that the tissue tiles went through the model
    params = CorrectionParams(weights=str(weights), device="cpu", qc_tile=256, tile=256, fidelity=False,
                              keep_sharp=False)
    out, report = correct(img, Selection.whole_image(), params)
    assert sorted(map(tuple, report.meta["skipped_empty"])) == [(0, 0, 1), (0, 1, 1)]
    np.testing.assert_array_equal(out[256:, 256:], img[256:, 256:])
    np.testing.assert_array_equal(out[:256, 256:], img[:256, 256:])
    assert {(r.row, r.col) for r in report.tiles} == {(0, 0), (1, 0)}
    assert not np.array_equal(out[:256, :256], img[:256, :256])  # the tissue tiles are corrected
    # chosen tiles: the empty one is skipped with a notice, the other corrected
    msgs = list(iter_correct(img, Selection.of_tiles([(0, 1, 1), (0, 1, 0)]), params))
    done = {(m.row, m.col) for m in msgs if isinstance(m, TileResult)}
    assert done == {(1, 0)}
    assert any(isinstance(m, Notice) and "without tissue signal" in m.message for m in msgs)
    # the first notice names the device, and how many GPUs there are to choose from (the dock offers cuda:N)
    import torch

    first = next(m for m in msgs if isinstance(m, Notice) and m.info and "device" in m.info)
    assert first.info["device"] == "cpu"
    assert first.info["gpus"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
