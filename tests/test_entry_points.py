"""The three entry points of a correction (napari dock, ``emdeblur correct``, the pipeline) run the
one correction service: same input and selection -> the same pixels and the same per-tile report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile

pytest.importorskip("torch")


def _norm(rows: list[dict]) -> list[dict]:
    """Report rows with NaN spelled one way (JSON NaN, or 'nan' in TIFF metadata) and floats rounded."""
    def norm(v):
        if isinstance(v, str) and v.lower() == "nan" or isinstance(v, float) and math.isnan(v):
            return None
        return round(v, 9) if isinstance(v, float) else v

    return [{k: norm(v) for k, v in r.items()} for r in rows]


def test_widget_cli_and_pipeline_agree(make_napari_viewer, tmp_path, sample_files):
    from scipy import ndimage

    from napari_emdeblur.cli import main
    from napari_emdeblur.io import load_section
    from napari_emdeblur.pipeline.config import PipelineConfig
    from napari_emdeblur.pipeline.process import process_tile
    from napari_emdeblur.widgets.correct import CorrectionWidget

    crop = np.asarray(load_section(sample_files["section"]).data)[256:512, 256:512].astype(np.float32)
    img = np.rint(ndimage.gaussian_filter(crop, 1.5)).astype(np.uint8)  # soft: past the do-no-harm gate
    src = tmp_path / "in" / "section.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, img)
    qc_tile, infer_tile, batch = 128, 256, 1

    # 1. the napari dock, whole image, exported with its report
    viewer = make_napari_viewer()
    viewer.add_image(img, name="sec")
    w = CorrectionWidget(viewer)
    w.layer_combo.value = "sec"
    w.tiles_combo.value = "all"
    w.qc_tile_spin.value = qc_tile
    w.tile_spin.value = infer_tile
    w.batch_spin.value = batch
    w.device_combo.value = "cpu"
    w.run(sync=True)
    assert w.export(tmp_path / "widget.tif") is not None
    widget_px = tifffile.imread(tmp_path / "widget.tif")
    widget_rows = json.loads((tmp_path / "widget_report.json").read_text())["tiles"]

    # 2. the command line
    rc = main(["correct", str(src), "-o", str(tmp_path / "cli.tif"), "--tiles", "all", "--tile-size", str(qc_tile),
               "--infer-tile", str(infer_tile), "--batch", str(batch), "--device", "cpu", "--quiet"])
    assert rc == 0
    cli_px = tifffile.imread(tmp_path / "cli.tif")
    cli_rows = json.loads((tmp_path / "cli_report.json").read_text())["tiles"]

    # 3. the pipeline, the tile decided "correct" by absolute thresholds around its score
    cfg = PipelineConfig(tile=qc_tile, correct_threshold=1e6, retake_threshold=-1e6, device="cpu",
                         infer_tile=infer_tile, infer_batch=batch)
    rec = process_tile(src, cfg, outdir=tmp_path / "pipeline")
    assert rec.error is None and rec.decision == "correct" and rec.corrected
    out = tmp_path / "pipeline" / rec.corrected
    pipe_px = tifffile.imread(out)
    pipe_rows = load_section(out).metadata["emdeblur"]["tiles"]

    assert widget_px.dtype == cli_px.dtype == pipe_px.dtype == img.dtype
    assert not np.array_equal(cli_px, img)  # something was corrected
    np.testing.assert_array_equal(widget_px, cli_px)
    np.testing.assert_array_equal(pipe_px, cli_px)
    assert len(cli_rows) == 4 and all(r["corrected"] for r in cli_rows)
    assert all(math.isfinite(r["fidelity_ratio"]) for r in cli_rows)
    assert _norm(widget_rows) == _norm(cli_rows) == _norm(pipe_rows)
    assert rec.score_after == pytest.approx(float(np.median([r["score_after"] for r in cli_rows])), abs=1e-6)
