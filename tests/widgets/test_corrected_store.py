"""The corrected layer's store: the original with corrected tiles overlaid, at every pyramid level."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emdeblur.widgets.corrected import CorrectedStore, ThrottledRefresh


def _pyramid(img: np.ndarray, n: int = 3) -> list[np.ndarray]:
    """Area-averaged levels (factor 2 each, odd sizes rounded up: partial cells averaged)."""
    levels = [img]
    for _ in range(1, n):
        a = levels[-1].astype(np.float64)
        h, w = a.shape[-2:]
        pad = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="edge")
        pad = pad.reshape(*a.shape[:-2], pad.shape[-2] // 2, 2, pad.shape[-1] // 2, 2)
        levels.append(np.rint(pad.mean(axis=(-3, -1))).astype(img.dtype))
    return levels


def _reference_level(orig0, corrected0, k):
    """Level k of the corrected image made the store's way: the original's level k plus the
    area average of the difference (cells clipped to the image)."""
    f = 2**k
    diff = corrected0.astype(np.float64) - orig0.astype(np.float64)
    h, w = orig0.shape
    hk, wk = -(-h // f), -(-w // f)
    out = np.zeros((hk, wk))
    for a in range(hk):
        for b in range(wk):
            out[a, b] = diff[a * f : (a + 1) * f, b * f : (b + 1) * f].mean()
    return out


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    return rng.integers(20, 230, (301, 263), dtype=np.uint8)


def test_level0_reads_paste_corrected_tiles_and_never_touch_the_original(image):
    original = image.copy()
    store = CorrectedStore([image])
    lvl = store.levels[0]
    assert lvl.shape == image.shape and lvl.dtype == image.dtype and lvl.ndim == 2
    np.testing.assert_array_equal(np.asarray(lvl), image)
    tile = np.full((64, 48), 7, np.uint8)
    store.put(store.prepare((0, 1, 2), 64, 96, tile))
    ref = image.copy()
    ref[64:128, 96:144] = 7
    np.testing.assert_array_equal(np.asarray(lvl), ref)
    np.testing.assert_array_equal(image, original)  # the original buffer is never written
    # any basic slice: steps, negative ends, ints
    for key in [(slice(50, 140, 3), slice(None, None, 5)), (slice(-250, -160), 100), (70, slice(90, 150)),
                (Ellipsis, slice(95, 97)), 100]:
        np.testing.assert_array_equal(lvl[key], ref[key])
    assert store.nbytes == tile.nbytes
    assert store.remove((0, 1, 2)) is not None
    np.testing.assert_array_equal(np.asarray(lvl), image)


def test_snapshot_keeps_the_tiles_shown_when_it_was_taken(image):
    """What an export writes: later puts and removes (review) change the store, not its snapshot."""
    store = CorrectedStore([image])
    store.put(store.prepare((0, 0, 0), 0, 0, np.full((32, 32), 1, np.uint8)))
    snap = store.snapshot()
    store.remove((0, 0, 0))
    store.put(store.prepare((0, 1, 1), 64, 64, np.full((32, 32), 2, np.uint8)))
    ref = image.copy()
    ref[:32, :32] = 1
    np.testing.assert_array_equal(np.asarray(snap.levels[0]), ref)
    assert snap.keys() == [(0, 0, 0)] and store.keys() == [(0, 1, 1)]


def test_multiscale_levels_follow_the_original_pyramid(image):
    levels = _pyramid(image)
    store = CorrectedStore(levels)
    assert [lv.shape for lv in store.levels] == [a.shape for a in levels]
    assert store.factors == [(1, 1), (2, 2), (4, 4)]
    corrected0 = image.copy()
    rng = np.random.default_rng(0)
    # an unaligned tile and an edge tile (partial cells at the image border)
    for key, (y0, x0, h, w) in {(0, 0, 0): (13, 21, 40, 33), (0, 1, 1): (270, 230, 31, 33)}.items():
        pix = rng.integers(0, 255, (h, w), dtype=np.uint8)
        corrected0[y0 : y0 + h, x0 : x0 + w] = pix
        store.put(store.prepare(key, y0, x0, pix))
    np.testing.assert_array_equal(np.asarray(store.levels[0]), corrected0)
    boxes = [(13, 21, 40, 33), (270, 230, 31, 33)]
    for k in (1, 2):
        expect = levels[k].astype(np.float64) + _reference_level(image, corrected0, k)
        f = 2**k
        H, W = image.shape
        for y0, x0, h, w in boxes:  # cells a tile covers whole (in the image): the corrected pixels' own mean
            for a in range(-(-y0 // f), expect.shape[0]):
                for b in range(-(-x0 // f), expect.shape[1]):
                    if min((a + 1) * f, H) <= y0 + h and min((b + 1) * f, W) <= x0 + w:
                        expect[a, b] = corrected0[a * f : (a + 1) * f, b * f : (b + 1) * f].mean()
        expect = np.clip(np.rint(expect), 0, 255)
        np.testing.assert_array_equal(np.asarray(store.levels[k]), expect.astype(np.uint8))
    # cells away from the tiles are the original pyramid's own
    np.testing.assert_array_equal(store.levels[2][30:, :40], levels[2][30:, :40])


def test_stack_and_lazy_base():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (3, 96, 80), dtype=np.uint8)
    lazy = da.from_array(stack, chunks=(1, 32, 32))
    store = CorrectedStore([lazy])
    pix = np.zeros((32, 32), np.uint8)
    store.put(store.prepare((1, 0, 1), 0, 32, pix))
    ref = stack.copy()
    ref[1, :32, 32:64] = 0
    np.testing.assert_array_equal(np.asarray(store.levels[0]), ref)
    np.testing.assert_array_equal(store.levels[0][1], ref[1])
    np.testing.assert_array_equal(store.levels[0][0, 10:40, 20:70], stack[0, 10:40, 20:70])
    np.testing.assert_array_equal(store.levels[0][0:3, 5, 30:40], ref[0:3, 5, 30:40])
    assert isinstance(store.levels[0][1, :4, :4], np.ndarray)


def test_throttled_refresh_coalesces_and_skips_what_is_out_of_view(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(np.zeros((64, 64), np.uint8))
    calls = []
    layer.events.set_data.connect(lambda e: calls.append(1))
    refresh = ThrottledRefresh(lambda: layer, min_interval_ms=200, camera=viewer.scene.camera)
    for _ in range(50):
        refresh.request((0, 0, 8, 8))
    assert refresh.pending and refresh.count == 0  # nothing happens synchronously
    qtbot.waitUntil(lambda: refresh.count == 1, timeout=5_000)
    assert len(calls) >= 1
    refresh.request(None)
    refresh.flush()
    assert refresh.count == 2 and not refresh.pending
    layer.visible = False
    refresh.request(None)
    refresh.flush()
    assert refresh.count == 2 and refresh.skipped == 1  # a hidden layer is not refreshed
    assert refresh.interval_ms >= 200
    layer.visible = True
    viewer.scene.camera.center = (8, 8)
    viewer.scene.camera.zoom = 50.0  # a few pixels around (8, 8) on screen
    qtbot.waitUntil(lambda: layer.corner_pixels[1][-1] < 40, timeout=5_000)
    refresh.request((50.0, 50.0, 60.0, 60.0))  # a change out of view: kept, not drawn
    qtbot.waitUntil(lambda: not refresh.pending, timeout=5_000)
    assert refresh.count == 2 and refresh.out_of_view == 1
    viewer.scene.camera.center = (55, 55)  # brought into view: drawn
    qtbot.waitUntil(lambda: refresh.count == 3, timeout=5_000)
    assert refresh.out_of_view == 0


class _CountingArray:
    """A read-only array-like over a numpy array that records how many pixels each read asked for
    (what a lazy pyramid level over tile files is to a writer)."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.a[key]
        self.reads.append(int(np.size(out)))
        return out


@pytest.mark.parametrize("name", ["corrected.ome.tif", "corrected.zarr", "corrected.tif"])
def test_export_of_the_corrected_layer_streams_block_by_block(tmp_path, name):
    """The writer reads a corrected lazy section in blocks (never the whole level at once), and
    what it writes is the corrected image."""
    from napari_emdeblur import io as emio
    from napari_emdeblur._writer import write_layer

    rng = np.random.default_rng(5)
    base = _CountingArray(rng.integers(0, 255, (4200, 2100), dtype=np.uint8))  # > 4096 px: a pyramid
    store = CorrectedStore([base])
    store.put(store.prepare((0, 3, 4), 768, 1024, np.full((256, 256), 9, np.uint8)))
    expect = base.a.copy()
    expect[768:1024, 1024:1280] = 9
    base.reads.clear()
    out = write_layer(tmp_path / name, store.levels[0], {"name": "x", "metadata": {}})
    assert base.reads and max(base.reads) <= base.a.size // 2, max(base.reads)
    back = emio.load_section(out)
    np.testing.assert_array_equal(np.asarray(back.data), expect)
    assert back.multiscale  # from the file's levels, or (plain TIFF: none) built by the reader
    if name == "corrected.tif":  # ImageJ TIFF without tiles: written strip by strip
        import tifffile

        with tifffile.TiffFile(out) as tif:
            assert tif.is_imagej and len(tif.pages[0].dataoffsets) > 1
