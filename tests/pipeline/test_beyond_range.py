"""A tile blurred far beyond what the model was trained on: the correction service leaves it as it is
and records a warning in its report; the pipeline puts that warning, naming the file, in the tile's record."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_emdeblur._sample_data import sample_paths
from napari_emdeblur.deblur.selection import Selection
from napari_emdeblur.deblur.service import CorrectionParams, correct
from napari_emdeblur.io import load_section, save_image
from napari_emdeblur.pipeline.config import PipelineConfig
from napari_emdeblur.pipeline.process import process_tile


@pytest.fixture(scope="module")
def very_blurred() -> np.ndarray:
    sharp = np.asarray(load_section(sample_paths()["ground_truth"]).data)[:512, :512].astype(np.float32)
    return np.clip(np.rint(ndimage.gaussian_filter(sharp, 8.0)), 0, 255).astype(np.uint8)


def test_service_reports_beyond_range_tiles(very_blurred):
    out, report = correct(very_blurred, Selection.whole_image(), CorrectionParams(device="cpu", fidelity=False))
    assert np.array_equal(out, very_blurred)
    assert report.meta["warnings"] and "beyond what the model was trained on" in report.meta["warnings"][0]
    mild = np.asarray(load_section(sample_paths()["ground_truth"]).data)[:512, :512]
    _, rep2 = correct(mild, Selection.whole_image(), CorrectionParams(device="cpu", fidelity=False))
    assert rep2.meta["warnings"] == []


def test_pipeline_record_names_the_file(very_blurred, tmp_path):
    src = tmp_path / "sec" / "tile_007.tif"
    src.parent.mkdir()
    save_image(src, very_blurred)
    # thresholds in px that call an 8 px tile "correct" (by default it is "retake" and never corrected)
    cfg = PipelineConfig(device="cpu", correct_px=1.0, retake_px=20.0, tile=256)
    rec = process_tile(src, cfg, outdir=tmp_path / "out")
    assert rec.error is None and rec.decision == "correct" and rec.corrected
    beyond = [w for w in rec.warnings if "beyond what the model was trained on" in w]
    assert beyond and beyond[0].startswith("tile_007.tif: ")
    written = np.asarray(load_section(tmp_path / "out" / rec.corrected).data)
    assert np.array_equal(written, very_blurred)  # nothing invented: the tile is as it was
