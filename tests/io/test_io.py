"""core.io: loading every supported input, bad input, atomic saving."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_emdeblur import io
from napari_emdeblur.io import EMReadError, load_section, save_image, save_ome_zarr


def _img(shape=(64, 80), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    return rng.integers(0, hi, size=shape, endpoint=True, dtype=dtype)


# --------------------------------------------------------------------------- single images
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_plain_tiff_roundtrip_keeps_dtype(tmp_path, dtype):
    from scipy import ndimage

    a = ndimage.uniform_filter(_img(dtype=dtype), 5)  # smooth: pure noise would be warned about
    tifffile.imwrite(tmp_path / "a.tif", a)
    s = load_section(tmp_path / "a.tif")
    assert s.data.dtype == dtype and s.axes == "yx" and not s.is_lazy
    np.testing.assert_array_equal(s.data, a)
    assert s.pixel_size is None and s.scale == (1.0, 1.0)
    assert s.name == "a" and s.metadata["warnings"] == []


@pytest.mark.parametrize("unit,value", [("nm", 4.6), ("micron", 0.0046), ("\\u00B5m", 0.0046)])
def test_imagej_pixel_size_in_nm(tmp_path, unit, value):
    a = _img()
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(1 / value, 1 / (2 * value)),
                     metadata={"unit": unit})
    s = load_section(tmp_path / "ij.tif")
    assert s.pixel_size == pytest.approx((9.2, 4.6), rel=1e-6)
    assert s.scale == pytest.approx((9.2, 4.6), rel=1e-6)


def test_ome_tiff_physical_size(tmp_path):
    a = _img(dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.ome.tif", a, metadata={
        "axes": "YX", "PhysicalSizeX": 0.004, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 5.0, "PhysicalSizeYUnit": "nm"})
    s = load_section(tmp_path / "a.ome.tif")
    np.testing.assert_array_equal(s.data, a)
    assert s.pixel_size == pytest.approx((5.0, 4.0))
    assert s.name == "a" and s.metadata["format"] == "ome-tiff"


def test_dpi_resolution_of_ordinary_software_is_ignored(tmp_path):
    tifffile.imwrite(tmp_path / "dpi.tif", _img(), resolution=(300, 300), resolutionunit="INCH")
    assert load_section(tmp_path / "dpi.tif").pixel_size is None


def test_png_bmp_8_and_16_bit(tmp_path):
    a8, a16 = _img(), _img(dtype=np.uint16, seed=1)
    Image.fromarray(a8).save(tmp_path / "a.png")
    Image.fromarray(a8).save(tmp_path / "a.bmp")
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "b.png", a16)
    for name, ref in (("a.png", a8), ("a.bmp", a8), ("b.png", a16)):
        s = load_section(tmp_path / name)
        assert s.data.dtype == ref.dtype, name
        np.testing.assert_array_equal(s.data, ref)


def test_multipage_tiff_is_zyx_stack(tmp_path):
    st = _img((5, 40, 48), np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", st, imagej=True, resolution=(0.25, 0.25),
                     metadata={"unit": "nm", "spacing": 50.0, "axes": "ZYX"})
    s = load_section(tmp_path / "stack.tif")
    assert s.axes == "zyx" and s.shape == (5, 40, 48)
    np.testing.assert_array_equal(s.data, st)
    assert s.pixel_size == pytest.approx((4.0, 4.0)) and s.z_spacing == pytest.approx(50.0)
    assert s.scale == pytest.approx((50.0, 4.0, 4.0))


def test_large_tiff_is_lazy_memmap_and_tiled(tmp_path):
    a = _img((300, 400), np.uint16)
    tifffile.imwrite(tmp_path / "contig.tif", a)  # contiguous -> memory map
    tifffile.imwrite(tmp_path / "tiled.tif", a, tile=(64, 64), compression="zlib")  # -> zarr store
    for name in ("contig.tif", "tiled.tif"):
        s = load_section(tmp_path / name, lazy_bytes=1000)
        assert s.is_lazy and type(s.data).__module__.startswith("dask"), name
        assert s.metadata["lazy"] is True
        np.testing.assert_array_equal(np.asarray(s.data[10:80, 100:170]), a[10:80, 100:170])
        np.testing.assert_array_equal(np.asarray(s.data), a)
    import pickle

    lazy = load_section(tmp_path / "contig.tif", lazy_bytes=1000)
    assert len(pickle.dumps(lazy.data)) < 20_000  # the graph holds no copy of the pixels
    tifffile.imwrite(tmp_path / "be.tif", a, byteorder=">")
    be = load_section(tmp_path / "be.tif", lazy_bytes=1000)
    assert be.is_lazy and be.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(be.data), a)
    tiled = load_section(tmp_path / "tiled.tif", lazy_bytes=1000)
    assert max(tiled.data.chunks[0]) == 64  # chunks follow the TIFF tiles: parts are read alone
    small = load_section(tmp_path / "tiled.tif")  # default 1 GiB limit: eager
    assert isinstance(small.data, np.ndarray)


# --------------------------------------------------------------------------- folders
def test_folder_of_images_natural_order(tmp_path):
    planes = {i: _img((32, 40), seed=i) for i in (1, 2, 10)}
    for i, a in planes.items():
        tifffile.imwrite(tmp_path / f"sec{i}.tif", a)
    (tmp_path / "notes.txt").write_text("not an image")
    s = load_section(tmp_path)
    assert s.axes == "zyx" and s.shape == (3, 32, 40)
    for z, i in enumerate((1, 2, 10)):  # natural order: 2 before 10
        np.testing.assert_array_equal(s.data[z], planes[i])
    lazy = load_section(tmp_path, lazy_bytes=100)
    assert lazy.is_lazy
    np.testing.assert_array_equal(np.asarray(lazy.data), s.data)


def test_folder_of_images_with_different_sizes_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _img((32, 40)))
    tifffile.imwrite(tmp_path / "b.tif", _img((32, 48)))
    with pytest.raises(EMReadError, match="differ in size"):
        load_section(tmp_path)


def _write_multisem(folder, tiles, coords_text):
    (folder / "000001").mkdir(parents=True, exist_ok=True)
    for name, a in tiles.items():
        Image.fromarray(a).save(folder / "000001" / name)
    (folder / io.COORDS_NAME).write_bytes(coords_text.encode())


def _multisem_fixture(tmp_path):
    """6 tiles of 40x50 in two z planes; floats, negative coordinates, overlaps, messy file."""
    th, tw = 40, 50
    tiles = {f"t{k}.bmp": _img((th, tw), seed=10 + k) for k in range(6)}
    # (name, x, y, z): tile origins; z=7 plane has 4 tiles overlapping by 5 px, z=9 has 2
    layout = [("t0.bmp", -10.2, -20.0, 7), ("t1.bmp", 34.6, -20.0, 7), ("t2.bmp", -10.0, 15.4, 7),
              ("t3.bmp", 35.0, 15.0, 7), ("t4.bmp", 0.0, 0.0, 9), ("t5.bmp", 100.0, 60.0, 9)]
    lines = ["# MultiSEM test section", "path\tx\ty\tz"]
    for name, x, y, z in layout:
        lines.append(f"000001\\{name}\t{x}\t{y}\t{z}")
    lines.insert(4, "")  # blank line
    text = "\r\n".join(lines) + "\r\n"
    _write_multisem(tmp_path, tiles, text)
    # expected mosaic: global origin (-10, -20) -> shift; later tile wins
    xs = [round(x) for _, x, _, _ in layout]
    ys = [round(y) for _, _, y, _ in layout]
    x0, y0 = min(xs), min(ys)
    H = max(ys) - y0 + th
    W = max(xs) - x0 + tw
    exp = np.zeros((2, H, W), np.uint8)
    for (name, _, _, z), x, y in zip(layout, xs, ys):
        exp[0 if z == 7 else 1, y - y0 : y - y0 + th, x - x0 : x - x0 + tw] = tiles[name]
    return exp, layout


def test_multisem_mosaic_layout_and_laziness(tmp_path):
    exp, layout = _multisem_fixture(tmp_path)
    s = load_section(tmp_path, chunk=32)
    assert s.is_lazy and s.axes == "zyx" and s.shape == exp.shape and s.dtype == np.uint8
    assert s.metadata["z_values"] == [7.0, 9.0] and s.metadata["n_tiles"] == 6
    assert len(s.tiles) == 6 and s.tiles[0] == io.AcqTile(s.tiles[0].path, 0, 0, 0, 40, 50)
    reader = s.reader
    assert reader.reads == 0  # opening reads the first tile's header only (shape/dtype)
    # a region inside tile t0 only (z=0, y<35, x<44 avoids overlaps): no other tile is read
    np.testing.assert_array_equal(np.asarray(s.data[0, :30, :30]), exp[0, :30, :30])
    assert reader.reads == 1
    # remove a tile that region does not need: still readable; a region needing it fails
    os.remove(tmp_path / "000001" / "t5.bmp")
    np.testing.assert_array_equal(np.asarray(s.data[1, :40, :50]), exp[1, :40, :50])
    with pytest.raises(EMReadError, match="t5.bmp"):
        np.asarray(s.data[1, -10:, -10:])


def test_multisem_full_mosaic_values_and_coordinate_file_path(tmp_path):
    exp, _ = _multisem_fixture(tmp_path)
    s = load_section(tmp_path / io.COORDS_NAME)  # the coordinates file itself also works
    np.testing.assert_array_equal(np.asarray(s.data), exp)
    per_z = load_section(tmp_path, origin="per_z")
    # per-z origin: plane 9 starts at its own minimum (0, 0) -> tile t4 at the corner
    np.testing.assert_array_equal(np.asarray(per_z.data[1, :40, :50]), exp[1, 20:60, 10:60])


def test_multisem_missing_tiles_listed(tmp_path):
    exp, _ = _multisem_fixture(tmp_path)
    os.remove(tmp_path / "000001" / "t2.bmp")
    os.remove(tmp_path / "000001" / "t3.bmp")
    with pytest.raises(EMReadError, match="2 tile") as ei:
        load_section(tmp_path)
    assert "t2.bmp" in str(ei.value) and "t3.bmp" in str(ei.value)


def test_multisem_section_of_mfov_subfolders(tmp_path):
    a, b = _img((32, 40), seed=1), _img((32, 40), seed=2)
    for _k, (mfov, arr, x) in enumerate((("000001", a, 0), ("000002", b, 40))):
        (tmp_path / mfov).mkdir()
        Image.fromarray(arr).save(tmp_path / mfov / "tile.bmp")
        # absolute paths from the acquisition PC: resolved by their tail under the folder
        (tmp_path / mfov / io.COORDS_NAME).write_text(f"D:\\scan\\sec\\{mfov}\\tile.bmp\t{x}\t0\t3\n")
    s = load_section(tmp_path)
    assert s.axes == "yx" and s.metadata["n_tiles"] == 2
    np.testing.assert_array_equal(np.asarray(s.data), np.concatenate([a, b], axis=1))


def test_parse_coordinates_tolerant(tmp_path):
    f = tmp_path / io.COORDS_NAME
    f.write_bytes("\ufeff// comment\r\na dir\\tile 1.bmp\t1.5\t-2\t3\r\nb/t2.tif  4e1  5\r\n"
                  "c\\t3.png;6;7;8\r\n\r\n".encode())
    rows = io.parse_coordinates(f)
    assert rows == [("a dir/tile 1.bmp", 1.5, -2.0, 3.0), ("b/t2.tif", 40.0, 5.0, 0.0),
                    ("c/t3.png", 6.0, 7.0, 8.0)]
    f.write_text("a.bmp\t1\t2\t3\nb.bmp\tnan\t2\t3\n")
    with pytest.raises(EMReadError, match="line"):
        io.parse_coordinates(f)
    f.write_text("a.bmp\t1\t2\t3\nthis line is garbage\n")
    with pytest.raises(EMReadError, match="line"):
        io.parse_coordinates(f)


# --------------------------------------------------------------------------- OME-Zarr
@pytest.mark.parametrize("shape", [(70, 90), (3, 40, 50)])
def test_ome_zarr_roundtrip(tmp_path, shape):
    import dask.array as da

    a = _img(shape, np.uint16)
    out = save_ome_zarr(tmp_path / "m.zarr", da.from_array(a, chunks=16), (4.0, 5.0),
                        z_spacing=45.0, metadata={"k": [1, 2]}, chunks=32)
    assert out == tmp_path / "m.zarr"
    import json

    attrs = json.loads((out / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and ms["axes"][-1] == {"name": "x", "type": "space", "unit": "nanometer"}
    s = load_section(out)
    assert s.is_lazy and s.shape == shape and s.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(s.data), a)
    assert s.pixel_size == pytest.approx((4.0, 5.0))
    assert s.metadata["emdeblur"] == {"k": [1, 2]}
    if len(shape) == 3:
        assert s.scale == pytest.approx((45.0, 4.0, 5.0))
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]  # no temp folder left
    with pytest.raises(FileExistsError):
        save_ome_zarr(out, a, None)
    save_ome_zarr(out, a[..., :20, :20] * 0 + 7, None, overwrite=True)
    assert np.asarray(load_section(out).data).max() == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


# --------------------------------------------------------------------------- validation / bad input
def test_rgb_converted_to_luminance_with_warning(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    s = load_section(tmp_path / "c.png")
    assert s.data.shape == (32, 32) and s.data.dtype == np.uint8
    assert int(s.data[0, 0]) == round(0.2126 * 200 + 0.7152 * 100 + 0.0722 * 50)
    assert any("luminance" in w for w in s.metadata["warnings"])
    grey = _img((32, 32))
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g.png")
    g = load_section(tmp_path / "g.png")
    np.testing.assert_array_equal(g.data, grey)
    assert any("grey image stored as RGB" in w for w in g.metadata["warnings"])


def test_float_images(tmp_path):
    f = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    tifffile.imwrite(tmp_path / "f01.tif", f)
    s = load_section(tmp_path / "f01.tif")
    assert s.data.dtype == np.uint16 and s.data.max() == 65535 and s.data.min() == 0
    tifffile.imwrite(tmp_path / "f.tif", f * 500 - 100)
    r = load_section(tmp_path / "f.tif")
    assert r.data.dtype == np.uint16 and r.data.max() == 65535
    assert any("rescaled" in w for w in r.metadata["warnings"])
    f[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with pytest.raises(EMReadError, match="NaN"):
        load_section(tmp_path / "nan.tif")


def test_integer_and_odd_dtypes():
    v = io.validate_image
    with pytest.raises(EMReadError, match="boolean"):
        v(np.zeros((32, 32), bool))
    with pytest.raises(EMReadError, match="complex"):
        v(np.zeros((32, 32), np.complex64))
    with pytest.raises(EMReadError, match="16 bits"):
        v(np.full((32, 32), 70000, np.int64))
    notes: list[str] = []
    out = v(np.full((32, 32), 1000, np.int64), "x", notes)
    assert out.dtype == np.uint16 and out[0, 0] == 1000 and notes
    s16 = v(np.array([[-32768, 0, 32767]] * 32, np.int16).repeat(11, 1)[:, :32])
    assert s16.dtype == np.uint16 and s16.min() == 0 and s16.max() == 65535


def test_tiny_image_refused(tmp_path):
    tifffile.imwrite(tmp_path / "tiny.tif", _img((8, 8)))
    with pytest.raises(EMReadError, match="too small"):
        load_section(tmp_path / "tiny.tif")


def test_corrupt_files_named_in_error(tmp_path):
    tifffile.imwrite(tmp_path / "ok.tif", _img((128, 128)))
    raw = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "random.tif").write_bytes(np.random.default_rng(1).bytes(4000))
    (tmp_path / "empty.tif").write_bytes(b"")
    Image.fromarray(_img((128, 128))).save(tmp_path / "ok.png")
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(raw[: len(raw) // 2])
    for name in ("trunc.tif", "random.tif", "empty.tif", "trunc.png"):
        with pytest.raises(EMReadError, match=name):
            load_section(tmp_path / name)
    with pytest.raises(EMReadError, match="no such"):
        load_section(tmp_path / "absent.tif")
    with pytest.raises(EMReadError, match="unsupported"):
        (tmp_path / "x.csv").write_text("1,2")
        load_section(tmp_path / "x.csv")


def test_load_from_bytes_already_read(tmp_path):
    """``content=``: decoded from the given bytes, never from the file (which may have changed)."""
    img = _img((96, 128))
    tifffile.imwrite(tmp_path / "a.tif", img, resolution=(1e7 / 4.0, 1e7 / 4.0), resolutionunit="CENTIMETER")
    Image.fromarray(img).save(tmp_path / "a.png")
    for name in ("a.tif", "a.png"):
        raw = (tmp_path / name).read_bytes()
        ref = load_section(tmp_path / name)
        (tmp_path / name).write_bytes(b"garbage")  # the file changes after it was read
        sec = load_section(tmp_path / name, content=raw)
        np.testing.assert_array_equal(np.asarray(sec.data), img)
        assert sec.pixel_size == ref.pixel_size and sec.name == ref.name
    tifffile.imwrite(tmp_path / "b.tif", img)
    raw = (tmp_path / "b.tif").read_bytes()
    with pytest.raises(EMReadError, match="b.tif"):
        load_section(tmp_path / "b.tif", content=raw[: len(raw) // 2])  # truncated bytes
    with pytest.raises(EMReadError, match="empty"):
        load_section(tmp_path / "b.tif", content=b"")
    with pytest.raises(EMReadError, match="single image files"):
        load_section(tmp_path, content=raw)


def test_empty_folder_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EMReadError, match="no readable images"):
        load_section(tmp_path / "empty")


# --------------------------------------------------------------------------- saving
@pytest.mark.parametrize("name", ["o.tif", "o.ome.tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int16])
def test_save_image_roundtrip(tmp_path, name, dtype):
    a = (np.random.default_rng(3).random((2, 40, 48)) * 100).astype(dtype)
    p = save_image(tmp_path / name, a, (4.6, 4.6), {"note": "x", "arr": np.arange(3)}, z_spacing=50.0)
    with tifffile.TiffFile(p) as tif:
        raw = tif.series[0].asarray()
    assert raw.dtype == dtype  # dtype preserved in the file
    np.testing.assert_array_equal(raw, a)
    s = load_section(p)
    assert s.pixel_size == pytest.approx((4.6, 4.6)) and s.axes == "zyx"
    assert s.metadata["emdeblur"] == {"note": "x", "arr": [0, 1, 2]}
    assert s.z_spacing == pytest.approx(50.0)
    assert oct(p.stat().st_mode & 0o777) != oct(0o600)  # not the private mode of mkstemp


@pytest.mark.parametrize("name", ["o.tif", "o.ome.tif"])
def test_save_image_lazy_bool(tmp_path, name):
    """A lazy mask (bool: TIFF packs it to bits) round-trips (not streamed as raw bytes)."""
    import dask.array as da

    a = np.random.default_rng(2).random((2, 40, 48)) > 0.5
    p = save_image(tmp_path / name, da.from_array(a, chunks=(1, 16, 16)))
    np.testing.assert_array_equal(tifffile.imread(p).astype(bool), a)


@pytest.mark.parametrize("name", ["o.tif", "o.ome.tif"])
@pytest.mark.parametrize("dtype", [np.uint8, ">u2", np.int16])
def test_save_image_streams_lazy_data_in_strips(tmp_path, name, dtype, monkeypatch):
    """Lazy data (a stack, rows not a multiple of the strip, a big-endian dtype) is written strip by
    strip with the same pixels and metadata as from memory."""
    import dask.array as da

    from napari_emdeblur.io import write

    monkeypatch.setattr(write, "STRIP_BYTES", 48 * 7)  # 7 rows of 48 px: many strips, a short last one
    a = (np.random.default_rng(4).random((2, 40, 48)) * 100).astype(dtype)
    p = save_image(tmp_path / name, da.from_array(a, chunks=(1, 16, 16)), (4.6, 4.6), {"note": "x"}, z_spacing=50.0)
    with tifffile.TiffFile(p) as tif:
        raw = tif.series[0].asarray()
        assert tif.pages[0].rowsperstrip == 7 // np.dtype(dtype).itemsize  # the strip size cap, in rows
    np.testing.assert_array_equal(raw, a)
    s = load_section(p)
    assert s.pixel_size == pytest.approx((4.6, 4.6)) and s.metadata["emdeblur"] == {"note": "x"}


def test_save_image_refuses_overwrite_and_input(tmp_path):
    a = _img()
    p = save_image(tmp_path / "a.tif", a)
    before = p.read_bytes()
    with pytest.raises(FileExistsError):
        save_image(p, a * 0)
    assert p.read_bytes() == before
    with pytest.raises(ValueError, match="input"):
        save_image(p, a * 0, overwrite=True, protect=[p])
    assert p.read_bytes() == before
    save_image(p, a * 0, overwrite=True)
    assert load_section(p).data.max() == 0
    with pytest.raises(ValueError, match="unsupported output"):
        save_image(tmp_path / "a.jpg", a)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.tif"]


def test_save_image_failure_leaves_nothing(tmp_path):
    import dask
    import dask.array as da

    def boom():
        raise RuntimeError("disk on fire")

    good = da.from_array(_img((1, 40, 48)))
    bad = da.from_delayed(dask.delayed(boom)(), (1, 40, 48), np.uint8)
    data = da.concatenate([good, bad])
    for name in ("f.tif", "f.ome.tif"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            save_image(tmp_path / name, data, (4.0, 4.0))
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_ome_zarr(tmp_path / "f.zarr", data, (4.0, 4.0))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real data
def test_real_drosophila_section(shared_data):
    f = shared_data / "drosophila_vnc_sstem" / "stack1" / "00.tif"
    s = load_section(f)
    assert s.shape == (1024, 1024) and s.dtype == np.uint8 and s.pixel_size is None
    assert np.asarray(s.data).std() > 10
