"""QC per acquisition tile (one decision per file of a mosaic) and per-tile values on real footprints."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from napari_emdeblur.io import load_section
from napari_emdeblur.qc import decisions as dec
from napari_emdeblur.qc.acquisition import FILE_CSV_COLUMNS, AcquisitionQC, file_score, iter_score_files
from napari_emdeblur.qc.messages import FileScores, Progress
from napari_emdeblur.qc.scoring import ScoreParams
from napari_emdeblur.qc.tilemap import TileFootprints, TileRaster, raster_level_shapes


def test_file_score_is_the_lower_quartile_and_keeps_the_worst():
    sub = np.array([[0.2, 0.21, np.nan], [0.05, 0.19, 0.2]], np.float32)
    score, worst = file_score(sub)
    assert worst == (1, 0)
    assert score == pytest.approx(np.quantile([0.2, 0.21, 0.05, 0.19, 0.2], 0.25))
    assert math.isnan(file_score(np.full((2, 2), np.nan))[0]) and file_score(np.full((2, 2), np.nan))[1] is None


@pytest.fixture(scope="module")
def scored(msem_section):
    folder, man = msem_section
    sec = load_section(folder, multiscale=False)
    msgs = list(iter_score_files(sec.tiles, ScoreParams(tile=256), sec.shape))
    return sec, man, msgs


def test_one_decision_per_file_the_blurred_file_is_flagged(scored):
    sec, man, msgs = scored
    files = [m for m in msgs if isinstance(m, FileScores)]
    assert len(files) == len(sec.tiles) == man["n_tiles"] and [f.index for f in files] == list(range(len(files)))
    assert sum(isinstance(m, Progress) for m in msgs) == len(files)
    result = msgs[-1]
    assert isinstance(result, AcquisitionQC) and len(result.decisions) == len(files)
    flagged = {Path(f.path).name for f, d in zip(result.files, result.decisions) if d != dec.OK}
    blurred = {Path(b["file"]).name for b in man["blurred"]}
    assert flagged == blurred  # the blurred file by its name; nothing else
    # the tiles around the gap (the missing centre beam) and at the mosaic's edge are not flagged
    names = {Path(t["file"]).name: t for t in man["tiles"]}
    assert all(names[n]["mfov"] == 1 and names[n]["beam"] == 3 for n in flagged)
    # sub-tiles at the file's right/bottom edge are scored at their true size
    f = files[0]
    assert f.sub_scores.shape == (2, 3) and (f.height, f.width) == (512, 576)
    assert np.isfinite(f.sub_scores[:, 2]).all()  # the 64 px wide last column


def test_rows_one_per_file_with_its_path_and_subtile_rows(scored, tmp_path):
    sec, man, msgs = scored
    result = msgs[-1]
    rows = result.rows()
    assert len(rows) == len(result.files) and all(r["level"] == "file" for r in rows)
    assert [r["file"] for r in rows] == [t.path for t in sec.tiles]
    bad = next(r for r in rows if r["decision"] != "ok")
    i = [r["file"] for r in rows].index(bad["file"])
    assert float(bad["score"]) == pytest.approx(result.files[i].score, rel=1e-5)
    assert bad["worst_height"] <= 256 and bad["worst_y0"] >= bad["y0"]
    out = dec.write_tile_csv(tmp_path / "files.csv", result.rows(subtiles=True), columns=FILE_CSV_COLUMNS)
    got = list(csv.DictReader(out.open()))
    subs = [r for r in got if r["level"] == "subtile"]
    assert len(got) - len(subs) == len(result.files)
    assert len(subs) == sum(f.sub_scores.size for f in result.files)
    last = next(r for r in subs if r["file"] == rows[0]["file"] and r["row"] == "1" and r["col"] == "2")
    assert (int(last["height"]), int(last["width"])) == (256, 64)  # true size, no overhang


def test_given_thresholds_and_section_relative_decisions(scored):
    sec, man, msgs = scored
    result = msgs[-1]
    s = result.scores
    c, r = result.thresholds[0]
    assert r < c < float(np.nanmedian(s))
    result.set_thresholds(float(np.nanmax(s)) + 1, float(np.nanmax(s)) + 1)
    assert result.counts() == (len(s), 0, len(s))
    result.decide()  # back to automatic
    assert result.counts()[1] + result.counts()[2] == len(man["blurred"])


# --------------------------------------------------------------------------- footprints and rasters
def test_grid_raster_partial_edge_tiles_at_true_size():
    fp = TileFootprints.from_grid((300, 700), 128)
    vals = np.arange(18, dtype=np.float32).reshape(1, 3, 6)
    shapes = raster_level_shapes((300, 700))
    r = TileRaster(fp, vals, shapes, fill=np.nan, dtype=np.float32)
    lv0 = np.asarray(r.levels[0])
    assert lv0.shape == (300, 700) and shapes[1] == (150, 350)
    assert lv0[299, 699] == 17 and lv0[255, 639] == 10 and lv0[256, 640] == 17
    lv1 = np.asarray(r.levels[1])
    assert lv1[63, 63] == 0 and lv1[64, 64] == 7 and lv1[149, 349] == 17
    vals[0, 2, 5] = 99  # values are read when sliced
    assert r.levels[0][299, 699] == 99


def test_box_footprints_later_wins_gaps_empty_outline():
    boxes = np.array([[0, 0, 0, 100, 120], [0, 80, 100, 100, 120], [0, 250, 0, 40, 40]])
    fp = TileFootprints.from_boxes((300, 300), boxes)
    r = TileRaster(fp, np.array([1, 2, 3], np.uint8), raster_level_shapes((300, 300)), fill=0)
    a = np.asarray(r.levels[0])
    assert a[0, 0] == 1 and a[85, 105] == 2 and a[99, 99] == 1 and a[150, 150] == 2
    assert a[200, 200] == 0 and a[260, 10] == 3 and a[295, 10] == 0  # gaps are empty
    assert fp.owner_at(0, 85, 105) == 1 and fp.owner_at(0, 200, 200) is None
    r.outline = 2
    b = np.asarray(r.levels[0])
    assert b[0, 0] == 1 and b[1, 50] == 1 and b[50, 50] == 0 and b[98, 50] == 1
    # the grid cells of a QC grid over the mosaic, by the file owning their centre
    own = fp.grid_owners(64)
    assert own.shape == (1, 5, 5) and own[0, 0, 0] == 0 and own[0, 2, 2] == 1 and own[0, 3, 3] == -1


def test_stack_raster_and_indexing():
    fp = TileFootprints.from_grid((2, 40, 50), 16)
    vals = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    r = TileRaster(fp, vals, raster_level_shapes((2, 40, 50)), fill=np.nan, dtype=np.float32)
    lv = r.levels[0]
    assert lv.shape == (2, 40, 50) and lv[1, 39, 49] == 23 and lv[1].shape == (40, 50)
    assert lv[:, 0, :].shape == (2, 50) and np.asarray(lv).shape == (2, 40, 50)


# --------------------------------------------------------------------------- blur metric: px and empty files
def test_files_in_px_empty_file_never_ok_gap_not_flagged(shared_data, tmp_path):
    """Three real-EM tile files with a gap between them: sharp, 2 px Gaussian blur, blank resin.
    Blur in px per file, the blank file EMPTY whatever the thresholds, blur columns in the CSV rows."""
    import tifffile

    from napari_emdeblur.deblur.train import degrade
    from napari_emdeblur.io.section import AcqTile

    img = np.asarray(load_section(shared_data / "sbem_rodent_cdeep3m" / "086.png").data)[:512, :512]
    soft = np.clip(np.round(degrade.blur(img.astype(np.float32) / 255, degrade.gaussian_psf(2.0)) * 255), 0, 255)
    blank = np.clip(np.round(130 + 5 * np.random.default_rng(0).standard_normal((512, 512))), 0, 255)
    tiles = []
    for k, (name, a) in enumerate((("sharp", img), ("soft", soft), ("blank", blank))):
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, a.astype(np.uint8))
        tiles.append(AcqTile(str(path), 0, 0, k * 600, 512, 512))  # 88 px gaps between the files
    result = list(iter_score_files(tiles, ScoreParams(tile=256), (512, 1712)))[-1]
    names = [result.decision_name(i) for i in range(3)]
    assert names == ["ok", "correct", "empty"], names
    assert result.thresholds[0] == pytest.approx((0.5, 0.25))  # the absolute px defaults: 1 and 3 px
    px = result.blur_px
    assert px[0] < 1.0 and 1.5 < px[1] < 2.6 and np.isnan(px[2])
    assert result.n_empty() == 1 and result.counts() == (2, 1, 0)  # counted apart
    result.set_thresholds(1.0, 1.0)  # flag everything scored: the empty file stays empty, never "correct"
    assert result.decisions[2] == dec.EMPTY and result.decisions[0] == dec.RETAKE
    assert result.footprints().owner_at(0, 100, 550) is None  # the gap belongs to no file: nothing decided there
    rows = result.rows(subtiles=True)
    files = [r for r in rows if r["level"] == "file"]
    assert float(files[1]["blur_px"]) == pytest.approx(px[1], rel=1e-3) and files[1]["blur_major_px"]
    assert files[2]["decision"] == "empty" and files[2]["empty_reason"] == "no_signal" and files[2]["score"] == ""
    assert {r["decision"] for r in rows if r["level"] == "subtile" and r["file"] == files[2]["file"]} == {"empty"}
    # thresholds in px: 3 px lets the 2 px file pass
    result = list(iter_score_files(tiles, ScoreParams(tile=256, correct_px=3.0), (512, 1712)))[-1]
    assert [result.decision_name(i) for i in range(3)] == ["ok", "ok", "empty"]
