"""Multiscale pyramids: exact area means, MultiSEM overviews from thumbnails, the sidecar cache,
file levels (OME-TIFF SubIFDs, OME-Zarr) and pyramid exports read back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_emdeblur.io import load_section, save_image
from napari_emdeblur.io.pyramid import (
    Pyramid,
    area_levels,
    block_tiles,
    level_shapes,
    n_levels_for,
    padded_extent,
    pyramid_cache_dir,
)


def _area_mean(img: np.ndarray, f: int) -> np.ndarray:
    """Brute force: the mean of every f x f block (partial blocks at the edge: their covered part)."""
    h, w = img.shape
    H, W = -(-h // f) * f, -(-w // f) * f
    s = np.zeros((H, W)), np.zeros((H, W))
    s[0][:h, :w], s[1][:h, :w] = img, 1
    tot = [a.reshape(H // f, f, W // f, f).sum((1, 3)) for a in s]
    return tot[0] / np.maximum(tot[1], 1)


def _area_mean_frac(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Brute force for non-integer factors: pixel i covers [i d, (i+1) d) of level 0, d = size / n."""
    out = np.zeros(shape)
    dy, dx = img.shape[0] / shape[0], img.shape[1] / shape[1]
    for i in range(shape[0]):
        ya, yb = i * dy, (i + 1) * dy
        wy = np.clip(np.minimum(np.arange(1, img.shape[0] + 1), yb) - np.maximum(np.arange(img.shape[0]), ya), 0, None)
        for j in range(shape[1]):
            xa, xb = j * dx, (j + 1) * dx
            wx = np.clip(np.minimum(np.arange(1, img.shape[1] + 1), xb) - np.maximum(np.arange(img.shape[1]), xa),
                         0, None)
            wgt = wy[:, None] * wx[None, :]
            out[i, j] = (img * wgt).sum() / wgt.sum()
    return out


# --------------------------------------------------------------------------- geometry and area means
def test_level_geometry():
    assert n_levels_for((1024, 1000)) == 1 and n_levels_for((1025, 10)) == 2 and n_levels_for((43648, 41600)) == 7
    assert padded_extent(43601, 7) == 43648 and padded_extent(64, 7) == 64
    assert level_shapes((3, 100, 61), 3) == [(3, 100, 61), (3, 50, 31), (3, 25, 16)]
    tiles = block_tiles((2, 5000, 3000), 2048)
    assert len(tiles) == 2 * 3 * 2 and tiles[-1].height == 5000 - 4096 and tiles[-1].width == 3000 - 2048


def test_area_levels_are_exact_means_with_partial_coverage():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (173, 211), dtype=np.uint8)
    y0, x0 = 37, 5  # not aligned with any block grid: blocks at the tile's edges are partly covered
    canvas = np.zeros((37 + 173 + 64, 5 + 211 + 64))
    canvas[y0 : y0 + 173, x0 : x0 + 211] = img
    cover = np.zeros_like(canvas)
    cover[y0 : y0 + 173, x0 : x0 + 211] = 1
    levels = area_levels(img, y0, x0, {k: (2.0**k, 2.0**k) for k in range(1, 6)})
    for k, (a, c, im) in levels.items():
        f = 1 << k
        num = _area_mean(canvas * 1.0, f)  # block mean of the covered part: block sum / covered pixels
        den = _area_mean(cover, f)
        ref = np.where(den > 0, num / np.maximum(den, 1e-12), 0)[a : a + im.shape[0], c : c + im.shape[1]]
        assert im.dtype == np.uint8 and a == y0 // f and c == x0 // f
        np.testing.assert_array_equal(im, np.clip(np.rint(ref), 0, 255))


def test_area_levels_non_integer_factor_and_thumbnails():
    rng = np.random.default_rng(1)
    img = rng.random((90, 70)) * 200
    shape = (31, 23)  # factors 90/31 and 70/23: pixel edges fall inside level-0 pixels
    (a, c, im), = area_levels(img, 0, 0, {1: (90 / 31, 70 / 23)}, np.float64).values()
    assert (a, c) == (0, 0) and im.shape == shape
    np.testing.assert_allclose(im, _area_mean_frac(img, shape), rtol=1e-9)
    # a thumbnail (an area average, 1/5 per axis) resampled exactly: same as reducing the tile
    thumb = img.reshape(18, 5, 14, 5).mean((1, 3))
    (_, _, from_thumb), = area_levels(thumb, 0, 0, {2: (10.0, 10.0)}, np.float64, scale=(5.0, 5.0)).values()
    np.testing.assert_allclose(from_thumb, _area_mean(img, 10), rtol=1e-9)


# --------------------------------------------------------------------------- MultiSEM pyramids
def test_multisem_pyramid_overview_from_thumbnails_and_sidecar(msem_section, tmp_path, monkeypatch):
    folder, man = msem_section
    monkeypatch.setenv("EMDEBLUR_CACHE", str(tmp_path / "cache"))  # a cold open, whatever ran before
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    sec = load_section(folder, multiscale=True)
    pyr = sec.pyramid
    assert sec.multiscale and sec.metadata["levels"] == "generated" and sec.metadata["thumbnails"] == man["n_tiles"]
    h, w = man["mosaic_shape"]
    n = n_levels_for((h, w))
    # level 0 padded (with gap) to exact power-of-two factors; levels in order
    assert sec.shape == (padded_extent(h, n), padded_extent(w, n)) and len(sec.levels) == n
    assert [tuple(lv.shape) for lv in sec.levels] == level_shapes(sec.shape, n)
    assert pyr.thumb_level == 3 and pyr.first_overview == 3
    assert pyr.wait(120) and pyr.error is None
    # the overview levels came from the thumbnails only: no full-resolution tile was read
    assert pyr.stats["full_reads"] == 0 and sec.reader.reads == 0
    assert pyr.stats["thumb_reads"] == man["n_tiles"] and pyr.stats["sidecar_writes"] == 1
    # ... and they are the area-averaged mosaic (level 3 against the full mosaic; the thumbnails are
    # area means on each tile's own 8 px grid, resampled onto the mosaic's: a little softer)
    full = np.asarray(sec.data).astype(np.float64)
    ref = _area_mean(full, 8)
    got = np.asarray(sec.levels[3]).astype(np.float64)
    inside = _area_mean((full > 0) * 1.0, 8) == 1  # blocks of tissue only (not at the gap or the edge)
    assert np.corrcoef(got[inside], ref[inside])[0, 1] > 0.95
    assert np.abs(got - ref)[inside].mean() < 8
    # the sidecar: one OME-Zarr in the cache folder (none beside the raw data, no temp folder left)
    side = pyr.sidecar_path
    assert side is not None and side.parent == pyramid_cache_dir() and side.is_dir()
    assert not [p for p in side.parent.iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    meta = json.loads((side / ".zattrs").read_text())
    assert [d["path"] for d in meta["multiscales"][0]["datasets"]] == ["3"]
    # a second open loads the overview from the sidecar and reads no tile at all
    again = load_section(folder, multiscale=True)
    assert again.pyramid.wait(60)
    st = again.pyramid.stats
    assert st["sidecar_loads"] == 1 and st["full_reads"] == 0 and st["thumb_reads"] == 0 and again.reader.reads == 0
    np.testing.assert_array_equal(np.asarray(again.levels[3]), np.asarray(sec.levels[3]))
    for p in (pyr, again.pyramid):
        p.close()


def test_fine_levels_on_demand_and_overview_without_thumbnails(msem_section, tmp_path, monkeypatch):
    folder, man = msem_section
    monkeypatch.setenv("EMDEBLUR_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "nothumbs"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("thumbnail_*", "full_thumbnail_coordinates.txt"))
    sec = load_section(copy, multiscale=True)
    pyr = sec.pyramid
    assert pyr.thumb_level is None
    assert pyr.wait(120)
    # without thumbnails the overview pass reads every tile once
    assert pyr.stats["full_reads"] == man["n_tiles"] and pyr.stats["thumb_reads"] == 0
    full = np.asarray(sec.data).astype(np.float64)
    # a fine level: the first read shows placeholders and queues the tiles; then it is the area mean
    lv1 = sec.levels[1]
    first = lv1[100:400, 200:600]
    assert first.shape == (300, 400)
    assert pyr.wait(60)
    got = lv1[100:400, 200:600].astype(np.float64)
    ref = _area_mean(full, 2)[100:400, 200:600]
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99
    # away from tile boundaries the level is exactly the area mean
    t = sec.tiles[-1]  # the last tile wins everywhere it is
    ya, xa = (t.y0 + 3) // 2, (t.x0 + 3) // 2
    np.testing.assert_array_equal(lv1[ya : ya + 20, xa : xa + 20],
                                  np.clip(np.rint(_area_mean(full, 2)[ya : ya + 20, xa : xa + 20]), 0, 255))
    pyr.close()


def test_newest_file_of_a_beam_wins(tmp_path):
    from PIL import Image

    a = np.full((64, 80), 10, np.uint8)
    b = np.full((64, 80), 200, np.uint8)
    names = ["001_000001_001_2026-01-01T1000.bmp", "001_000001_001_2026-01-02T0900.bmp", "001_000001_002_2026-01-01T1000.bmp"]
    for n, img in zip(names, (b, a, a)):
        Image.fromarray(img).save(tmp_path / n)
    # the retake (newer time stamp) is listed first; the older file of beam 1 is dropped
    (tmp_path / "full_image_coordinates.txt").write_text(
        f"{names[1]}\t0\t0\t0\n{names[0]}\t0\t0\t0\n{names[2]}\t70\t0\t0\n")
    sec = load_section(tmp_path)
    assert [Path(t.path).name for t in sec.tiles] == [names[1], names[2]]
    assert sec.metadata["superseded"] == [str(tmp_path / names[0])]
    assert np.asarray(sec.data)[10, 10] == 10


# --------------------------------------------------------------------------- single files
def test_large_single_image_gets_generated_levels(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (2500, 1900), dtype=np.uint8)
    p = save_image(tmp_path / "big.tif", img, levels=1)
    monkeypatch.setenv("EMDEBLUR_MULTISCALE_SIDE", "2048")
    sec = load_section(p, lazy_bytes=1 << 20)  # lazy: a dask/memory-mapped level 0
    assert sec.is_lazy and sec.multiscale and sec.metadata["levels"] == "generated"
    assert [tuple(lv.shape) for lv in sec.levels] == [(2500, 1900), (1250, 950), (625, 475)]
    assert sec.pyramid.wait(60)
    # exact area means, also where the shape is not a multiple of the factor (625 x 475 -> 4.0 exactly)
    np.testing.assert_array_equal(np.asarray(sec.levels[2]), np.clip(np.rint(_area_mean(img * 1.0, 4)), 0, 255))
    assert sec.pyramid.sidecar_path is not None and sec.pyramid.sidecar_path.is_dir()
    # smaller than the threshold: single scale; multiscale=False: never
    monkeypatch.setenv("EMDEBLUR_MULTISCALE_SIDE", "4096")
    assert not load_section(p).multiscale
    assert not load_section(p, multiscale=False, lazy_bytes=1 << 20).multiscale
    sec.pyramid.close()


def test_pyramid_of_odd_shape_is_aligned_to_napari_factors():
    img = np.arange(101 * 37, dtype=np.float32).reshape(101, 37) % 97
    tiles = block_tiles(img.shape, 128)

    def read(i):
        t = tiles[i]
        return img[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width]

    pyr = Pyramid(img, tiles, read, n_levels=2)
    assert pyr.wait(30)
    # napari draws level-1 pixel i over level-0 [i d, (i + 1) d) with d = 101 / 51 (and 37 / 19)
    np.testing.assert_allclose(np.asarray(pyr.levels[1]), _area_mean_frac(img, (51, 19)), rtol=1e-5)
    pyr.close()


# --------------------------------------------------------------------------- file levels and exports
@pytest.mark.parametrize("name", ["p.ome.tif", "p.ome.zarr"])
def test_pyramid_export_round_trip(tmp_path, name):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 65535, (700, 1030), dtype=np.uint16)
    out = save_image(tmp_path / name, img, (4.0, 4.0), {"note": "x"}, levels=3)
    sec = load_section(out)
    assert sec.multiscale and sec.metadata["levels"] == "file" and sec.pyramid is None
    assert sec.pixel_size == (4.0, 4.0) and sec.dtype == np.uint16
    assert [tuple(lv.shape) for lv in sec.levels] == [(700, 1030), (350, 515), (175, 258)]
    np.testing.assert_array_equal(np.asarray(sec.levels[0]), img)
    for k in (1, 2):
        np.testing.assert_array_equal(np.asarray(sec.levels[k]),
                                      np.clip(np.rint(_area_mean(img * 1.0, 1 << k)), 0, 65535))
    if name.endswith(".tif"):
        import tifffile

        with tifffile.TiffFile(out) as tif:
            s = tif.series[0]
            assert s.is_pyramidal and len(tif.pages[0].subifds) == 2
    else:
        meta = json.loads((out / ".zattrs").read_text())["multiscales"][0]
        assert [d["path"] for d in meta["datasets"]] == ["0", "1", "2"]
        tr = meta["datasets"][2]["coordinateTransformations"]
        assert tr[0]["scale"] == [16.0, 16.0] and tr[1]["translation"] == [6.0, 6.0]
    # a big enough section gets levels by default, a small one does not
    assert not load_section(save_image(tmp_path / ("s" + name), img[:100, :100])).multiscale


def test_pyramid_export_of_a_stack_and_lazy_data(tmp_path):
    import dask.array as da
    import tifffile

    rng = np.random.default_rng(4)
    st = rng.integers(0, 255, (3, 300, 260), dtype=np.uint8)
    out = save_image(tmp_path / "st.ome.tif", da.from_array(st, chunks=(1, 64, 64)), (5.0, 5.0), levels=2,
                     z_spacing=40.0)
    with tifffile.TiffFile(out) as tif:
        assert [lv.shape for lv in tif.series[0].levels] == [(3, 300, 260), (3, 150, 130)]
    sec = load_section(out)
    np.testing.assert_array_equal(np.asarray(sec.data), st)
    np.testing.assert_array_equal(np.asarray(sec.levels[1][1]), np.clip(np.rint(_area_mean(st[1] * 1.0, 2)), 0, 255))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_unpadded_mosaic_stays_single_scale(msem_section):
    folder, man = msem_section
    sec = load_section(folder, multiscale=False)
    assert not sec.multiscale and sec.pyramid is None
    assert np.abs(np.subtract(sec.shape, man["mosaic_shape"])).max() <= 1  # (positions rounded) not padded
    assert os.environ["EMDEBLUR_CACHE"] in str(pyramid_cache_dir())
