"""napari reader / writer contributions and the bundled sample data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_emdeblur._reader import get_reader, read_sections
from napari_emdeblur._sample_data import make_sample_data, sample_paths, sample_tiles
from napari_emdeblur._writer import write_single_image
from napari_emdeblur.io import COORDS_NAME, EMReadError, load_section


def _img(shape=(48, 64), dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "table.csv").write_text("1,2")
    (tmp_path / "nothing").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "table.csv")) is None
    assert get_reader(str(tmp_path / "nothing")) is None
    assert get_reader([]) is None
    tifffile.imwrite(tmp_path / "a.tif", _img())
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "table.csv")]) is None
    assert callable(get_reader(str(tmp_path / "a.tif")))


def test_reader_layer_tuple_with_scale_and_metadata(tmp_path):
    a = _img()
    tifffile.imwrite(tmp_path / "a.tif", a, imagej=True, resolution=(1 / 4.0, 1 / 4.0),
                     metadata={"unit": "nm"})
    layers = get_reader(str(tmp_path / "a.tif"))(str(tmp_path / "a.tif"))
    assert len(layers) == 1
    data, kw, kind = layers[0]
    assert kind == "image" and kw["name"] == "a"
    np.testing.assert_array_equal(data, a)
    assert kw["scale"] == pytest.approx((4.0, 4.0))
    md = kw["metadata"]
    assert md["emdeblur_source"] == str(tmp_path / "a.tif") and md["pixel_size"] == [4.0, 4.0]
    json.dumps(md)  # layer metadata stay serialisable


def test_reader_stack_and_list_of_paths(tmp_path):
    st = _img((3, 40, 48))
    tifffile.imwrite(tmp_path / "st.tif", st, photometric="minisblack")  # a stack, not planar RGB
    (data, kw, _), = read_sections(str(tmp_path / "st.tif"))
    assert data.shape == (3, 40, 48) and kw["scale"] == (1.0, 1.0, 1.0)
    for i in range(3):
        tifffile.imwrite(tmp_path / f"p{i}.tif", st[i])
    paths = [str(tmp_path / f"p{i}.tif") for i in range(3)]
    (data, kw, _), = get_reader(paths)(paths)  # same-shape 2-D sections -> one stack
    np.testing.assert_array_equal(data, st)
    assert kw["metadata"]["files"] == paths and len(kw["scale"]) == 3
    tifffile.imwrite(tmp_path / "other.tif", _img((20, 30)))
    layers = read_sections([paths[0], str(tmp_path / "other.tif")])
    assert [lay[0].shape for lay in layers] == [(40, 48), (20, 30)]


def test_reader_multisem_folder_is_lazy_with_tiles(tmp_path):
    from PIL import Image

    t = [_img((32, 40), np.uint8, seed=k) for k in range(2)]
    for k, a in enumerate(t):
        Image.fromarray(a).save(tmp_path / f"tile{k}.bmp")
    (tmp_path / COORDS_NAME).write_text("tile0.bmp\t0\t0\t1\ntile1.bmp\t40\t0\t1\n")
    assert callable(get_reader(str(tmp_path)))
    (data, kw, _), = read_sections(str(tmp_path))
    assert type(data).__module__.startswith("dask")
    np.testing.assert_array_equal(np.asarray(data), np.concatenate(t, axis=1))
    assert [d["x0"] for d in kw["metadata"]["tiles"]] == [0, 40]
    assert kw["contrast_limits"] == (0.0, 255.0)
    json.dumps(kw["metadata"])


def test_reader_raises_clear_error_for_corrupt_file(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage" * 10)
    fn = get_reader(str(tmp_path / "bad.tif"))
    with pytest.raises(EMReadError, match="bad.tif"):
        fn(str(tmp_path / "bad.tif"))


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.zarr"])
def test_writer_roundtrip_preserves_dtype_scale_metadata(tmp_path, name):
    a = _img((2, 40, 48))
    meta = {"name": "corrected", "scale": (50.0, 4.6, 4.6),
            "metadata": {"pixel_size": [4.6, 4.6], "emdeblur_source": str(tmp_path / "src.tif"),
                         "model": "gran-v1", "tiles": [{"big": "skipped"}]}}
    out = write_single_image(str(tmp_path / name), a, meta)
    assert out == [str(tmp_path / name)]
    s = load_section(out[0])
    assert s.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(s.data), a)
    assert s.pixel_size == pytest.approx((4.6, 4.6)) and s.z_spacing == pytest.approx(50.0)
    assert s.metadata["emdeblur"]["model"] == "gran-v1"
    assert s.metadata["emdeblur"]["layer_name"] == "corrected"
    # through the reader, the written file opens with the same scale
    (_, kw, _), = read_sections(out[0])
    assert kw["scale"] == pytest.approx((50.0, 4.6, 4.6))


def test_writer_scale_fallback_and_refuses_own_source(tmp_path):
    a = _img()
    src = tmp_path / "src.tif"
    tifffile.imwrite(src, a)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="input"):
        write_single_image(str(src), a * 0, {"scale": (1, 1), "metadata": {"emdeblur_source": str(src)}})
    assert src.read_bytes() == before
    write_single_image(str(tmp_path / "o.tif"), a, {"scale": (3.0, 3.0), "metadata": {}})
    assert load_section(tmp_path / "o.tif").pixel_size == pytest.approx((3.0, 3.0))
    write_single_image(str(tmp_path / "u.tif"), a, {"scale": (1.0, 1.0), "metadata": {}})
    assert load_section(tmp_path / "u.tif").pixel_size is None
    with pytest.raises(ValueError, match="unsupported"):
        write_single_image(str(tmp_path / "o.png"), a, {})


def test_writer_saves_level_0_of_a_multiscale_layer(make_napari_viewer, tmp_path):
    """napari's File > Save hands the writer a multiscale layer's levels (its MultiScaleData)."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    lvl0 = rng.integers(0, 255, (256, 320), dtype=np.uint8)
    layer = viewer.add_image([lvl0, lvl0[::2, ::2], lvl0[::4, ::4]], multiscale=True, name="pyr")
    data, meta, _ = layer.as_layer_data_tuple()
    assert meta["multiscale"] and not isinstance(data, (list, tuple))
    (out,) = write_single_image(str(tmp_path / "pyr.ome.tif"), data, meta)
    np.testing.assert_array_equal(np.asarray(load_section(out).data), lvl0)


def test_manifest_lists_the_formats_of_io_formats():
    """napari.yaml cannot hold code, so its suffix lists are copies: they must equal the registry's."""
    npe2 = pytest.importorskip("npe2")
    from importlib.resources import files

    from napari_emdeblur.io.formats import IMAGE_SUFFIXES, WRITE_SUFFIXES

    mf = npe2.PluginManifest.from_file(str(files("napari_emdeblur") / "napari.yaml"))
    (reader,), (writer,) = mf.contributions.readers, mf.contributions.writers
    # single images, plus OME-Zarr folders and MultiSEM coordinate files
    assert reader.filename_patterns == [f"*{s}" for s in IMAGE_SUFFIXES] + ["*.zarr", "*.txt"]
    assert reader.accepts_directories
    assert list(writer.filename_extensions) == list(WRITE_SUFFIXES)


def test_npe2_manifest_reader_and_writer(tmp_path):
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    try:
        pm.get_manifest("napari-emdeblur")
    except KeyError:
        pytest.skip("napari-emdeblur manifest not installed")
    a = _img()
    tifffile.imwrite(tmp_path / "a.tif", a, imagej=True, resolution=(0.25, 0.25), metadata={"unit": "nm"})
    layers = npe2.read([str(tmp_path / "a.tif")], stack=False, plugin_name="napari-emdeblur")
    np.testing.assert_array_equal(layers[0][0], a)
    assert layers[0][1]["scale"] == pytest.approx((4.0, 4.0))
    out = npe2.write(str(tmp_path / "w.ome.tif"), [layers[0]], plugin_name="napari-emdeblur")
    assert out == [str(tmp_path / "w.ome.tif")]
    assert load_section(out[0]).pixel_size == pytest.approx((4.0, 4.0))


# --------------------------------------------------------------------------- sample data
def test_sample_files_present_small_and_licensed():
    paths = sample_paths()
    assert all(p.is_file() for p in paths.values())
    assert sum(p.stat().st_size for p in paths.values()) < 3_000_000
    lic = paths["license"].read_text()
    assert "CC BY-NC-SA 3.0" in lic and "10.6084/m9.figshare.856713" in lic


def test_sample_data_layers_match_json():
    info = sample_tiles()
    (soft, skw, _), (gt, gkw, _) = make_sample_data()
    assert skw["name"] == "EM section (sample)" and gkw["name"] == "ground truth (sample)"
    assert soft.shape == gt.shape == tuple(info["shape"]) and soft.dtype == gt.dtype == np.uint8
    assert skw["scale"] == pytest.approx(tuple(info["pixel_size_nm"]))
    assert skw["metadata"]["sample_tiles"] == info and "CC BY-NC-SA" in skw["metadata"]["license"]
    T = info["tile"]
    assert info["grid"] == [soft.shape[0] // T, soft.shape[1] // T]
    assert len(info["blurred_tiles"]) + len(info["sharp_tiles"]) == info["grid"][0] * info["grid"][1]

    def bandpass(a):
        a = a.astype(np.float32)
        return ndimage.gaussian_filter(a, 1.0) - ndimage.gaussian_filter(a, 3.0)

    bs, bg = bandpass(soft), bandpass(gt)

    def ratio(r, c):
        sl = (slice(r * T, (r + 1) * T), slice(c * T, (c + 1) * T))
        return float(bs[sl].std() / bg[sl].std())

    for r, c in info["sharp_tiles"]:
        assert ratio(r, c) > 0.95, (r, c)  # sharp tiles keep their detail (noise only)
    by_sev: dict[str, list[float]] = {}
    for t in info["blurred_tiles"]:
        assert (t["y0"], t["x0"]) == (t["row"] * T, t["col"] * T)
        by_sev.setdefault(t["severity"], []).append(ratio(t["row"], t["col"]))
    assert sorted(by_sev) == ["medium", "mild", "severe"]
    assert max(by_sev["mild"]) < 0.9
    assert max(by_sev["medium"]) < min(by_sev["mild"])
    assert max(by_sev["severe"]) < min(by_sev["medium"])


def test_make_sample_script_reproduces_bundled_files(shared_data, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_sample.py"
    spec = importlib.util.spec_from_file_location("make_sample", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--data", str(shared_data), "--out", str(tmp_path)]) == 0
    paths = sample_paths()
    for key, name in (("section", "sample_section.tif"), ("ground_truth", "sample_ground_truth.tif")):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / name), tifffile.imread(paths[key]))
    assert json.loads((tmp_path / "sample_tiles.json").read_text()) == sample_tiles()


def test_napari_viewer_model_opens_sample_and_saves(tmp_path):
    """Through napari itself (no Qt): sample data, reader by plugin name, layer.save."""
    pytest.importorskip("napari")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    v = ViewerModel()
    try:
        v.open_sample("napari-emdeblur", "em_section")
    except KeyError:
        pytest.skip("napari-emdeblur sample not registered (manifest not installed)")
    assert [lay.name for lay in v.layers] == ["EM section (sample)", "ground truth (sample)"]
    assert tuple(v.layers[0].scale) == pytest.approx((4.6, 4.6))
    from PIL import Image

    Image.fromarray(_img((32, 40), np.uint8)).save(tmp_path / "t0.bmp")
    (tmp_path / COORDS_NAME).write_text("t0.bmp\t10\t20\t0\n")
    v.open(str(tmp_path), plugin="napari-emdeblur")
    assert v.layers[-1].data.shape == (32, 40)
    out = v.layers[0].save(str(tmp_path / "saved.ome.tif"), plugin="napari-emdeblur")
    assert out == [str(tmp_path / "saved.ome.tif")]
    back = load_section(out[0])
    np.testing.assert_array_equal(back.data, np.asarray(v.layers[0].data))
    assert back.pixel_size == pytest.approx((4.6, 4.6))


def test_reader_returns_a_multiscale_layer_for_big_sections(tmp_path, monkeypatch):
    from napari_emdeblur.io import save_image

    img = _img((600, 900), np.uint8)
    p = save_image(tmp_path / "pyr.ome.tif", img, (4.0, 4.0), levels=3)
    (data, kw, kind), = read_sections(str(p))  # the file's own levels
    assert kind == "image" and kw["multiscale"] and kw["interpolation2d"] == "linear" and "cache" not in kw
    assert [tuple(d.shape) for d in data] == [(600, 900), (300, 450), (150, 225)]
    assert kw["metadata"]["level_shapes"] == [[600, 900], [300, 450], [150, 225]]
    json.dumps(kw["metadata"])
    # single level, but above the size limit: generated levels (down to a side of at most 1024 px)
    q = save_image(tmp_path / "flat.tif", _img((1100, 1500), np.uint8))
    monkeypatch.setenv("EMDEBLUR_MULTISCALE_SIDE", "512")
    (data, kw, _), = read_sections(str(q))
    assert kw["multiscale"] and kw["cache"] is False and len(data) == 2
    assert tuple(data[0].shape) == (1100, 1500) and tuple(data[1].shape) == (550, 750)
    monkeypatch.setenv("EMDEBLUR_MULTISCALE_SIDE", "4096")
    (data, kw, _), = read_sections(str(q))
    assert "multiscale" not in kw and data.shape == (1100, 1500)


def test_reader_warnings_are_told_once(tmp_path, capfd):
    """What the reader converts (a grey image stored as RGB) is told once: a napari notification in
    the viewer, one ``warning:`` line in the CLI (it was printed twice there, once by the logging
    module's last-resort handler)."""
    import imageio.v3 as iio
    from napari.utils.notifications import notification_manager

    from napari_emdeblur.cli import main

    grey = _img((96, 96), np.uint8)
    path = tmp_path / "rgb.png"
    iio.imwrite(path, np.stack([grey] * 3, axis=-1))
    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    read_sections(str(path))
    assert [m for m in seen if "grey image stored as RGB" in m] == [f"{path}: grey image stored as RGB, first channel used"]
    capfd.readouterr()
    main(["score", str(path), "--tile", "64", "--metric", "autocorr"])
    err = capfd.readouterr().err
    assert err.count("grey image stored as RGB") == 1 and "warning: " in err, err
