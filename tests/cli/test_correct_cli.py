"""``emdeblur correct`` end to end: shapes/dtypes, untouched tiles byte-identical, no overwrite."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from napari_emdeblur.cli import main
from napari_emdeblur.deblur.nets.gran import GRAN, GRANConfig
from napari_emdeblur.deblur.weights import save_model
from napari_emdeblur.qc.focus import score_tiles

TILE = 128


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    m = GRAN(GRANConfig(scale=2, width=8, n_groups=1, n_grabs=1, n_trunk=1, n_mask=1))
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    save_model(m, path)
    return path


def _section(seed=0, shape=(384, 512)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    ridges = np.exp(-((field / (0.2 * field.std())) ** 2))
    img = 0.65 - 0.5 * ridges + 0.04 * rng.standard_normal(shape)
    return np.clip(img, 0, 1)


def _with_soft_tiles(img01: np.ndarray, soft=((0, 1), (2, 3)), sigma: float = 1.0) -> np.ndarray:
    """Blur the ``soft`` tiles: sigma 1 px is mild (to correct), sigma >= 3 px is beyond
    correction (to retake) for the automatic thresholds."""
    out = img01.copy()
    blurred = ndimage.gaussian_filter(img01, sigma)
    for i, j in soft:
        sl = (slice(i * TILE, (i + 1) * TILE), slice(j * TILE, (j + 1) * TILE))
        out[sl] = blurred[sl]
    return out


def _changed_tiles(a, b):
    H, W = a.shape
    return {(i, j) for i in range(-(-H // TILE)) for j in range(-(-W // TILE))
            if not np.array_equal(a[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE],
                                  b[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE])}


def test_flagged_tiles_only_and_refuse_overwrite(tmp_path, weights):
    img = (_with_soft_tiles(_section()) * 255).round().astype(np.uint8)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, img)
    scores = score_tiles(img, TILE)
    soft = scores[0, 1], scores[2, 3]
    others = np.delete(scores.ravel(), [1, 2 * 4 + 3])
    assert max(soft) < others.min()  # the blurred tiles score lowest
    thr = 0.5 * (max(soft) + others.min())
    rc = main(["correct", str(src), "-o", str(dst), "--tiles", "flagged", "--threshold", str(thr),
               "--tile-size", str(TILE), "--weights", str(weights), "--device", "cpu", "--quiet"])
    assert rc == 0
    out = tifffile.imread(dst)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert _changed_tiles(img, out) == {(0, 1), (2, 3)}  # every other tile byte-identical
    assert np.array_equal(tifffile.imread(src), img)  # input untouched

    before = dst.read_bytes()
    rc = main(["correct", str(src), "-o", str(dst), "--weights", str(weights), "--quiet"])
    assert rc != 0 and dst.read_bytes() == before  # refuses an existing output
    rc = main(["correct", str(src), "-o", str(src), "--overwrite", "--weights", str(weights), "--quiet"])
    assert rc != 0 and np.array_equal(tifffile.imread(src), img)  # never over the input
    rc = main(["correct", str(src), "-o", str(dst), "--overwrite", "--threshold", "-1", "--tile-size", str(TILE),
               "--weights", str(weights), "--quiet"])
    assert rc == 0 and np.array_equal(tifffile.imread(dst), img)  # nothing below -1: a byte copy
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_retake_tiles_left_untouched(tmp_path, weights, capsys):
    """Only the CORRECT class is deblurred: a tile too blurred to correct (RETAKE) is copied
    byte for byte and reported, like the widget and the pipeline do."""
    base = _section(4)
    img01 = _with_soft_tiles(base, soft=((0, 1), (2, 3)), sigma=1.0)  # mild: to correct
    img01 = _with_soft_tiles(img01, soft=((1, 0),), sigma=8.0)  # severe: to retake
    img = (img01 * 255).round().astype(np.uint8)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, img)
    args = ["correct", str(src), "-o", str(dst), "--tile-size", str(TILE), "--weights", str(weights),
            "--device", "cpu", "--metric", "autocorr",  # section-relative thresholds on a synthetic texture
            "--no-gate"]  # the selection is under test: every selected tile changes
    assert main(args) == 0  # automatic thresholds
    err = capsys.readouterr().err
    assert "2/12 tiles corrected" in err and "1 too blurred to correct" in err and "1 to retake" in err
    out = tifffile.imread(dst)
    assert _changed_tiles(img, out) == {(0, 1), (2, 3)}  # the retake tile (1, 0) is byte-identical

    # an explicit retake threshold below every score corrects the severe tile too
    assert main(args + ["--overwrite", "--retake-threshold", "-1", "--quiet"]) == 0
    assert _changed_tiles(img, tifffile.imread(dst)) == {(0, 1), (1, 0), (2, 3)}
    # retake above correct is refused, and the output is left as it was
    before = dst.read_bytes()
    assert main(args + ["--overwrite", "--threshold", "0.1", "--retake-threshold", "0.2", "--quiet"]) != 0
    assert main(args + ["--overwrite", "--retake-threshold", "abc", "--quiet"]) != 0
    assert dst.read_bytes() == before


def test_all_tiles_uint16_odd_size(tmp_path, weights):
    img = (_section(1, (201, 333)) * 60000).astype(np.uint16)
    src, dst = tmp_path / "in16.tif", tmp_path / "out16.tif"
    tifffile.imwrite(src, img)
    rc = main(["correct", str(src), "-o", str(dst), "--tiles", "all", "--weights", str(weights),
               "--infer-tile", "128", "--device", "cpu", "--no-gate", "--quiet"])
    assert rc == 0
    out = tifffile.imread(dst)
    assert out.shape == img.shape and out.dtype == np.uint16
    assert (out != img).mean() > 0.5


def test_stack_auto_threshold(tmp_path, weights):
    a = (_with_soft_tiles(_section(2)) * 255).round().astype(np.uint8)
    b = (_section(3) * 255).round().astype(np.uint8)
    stack = np.stack([a, b])
    src, dst = tmp_path / "stack.tif", tmp_path / "stack_out.tif"
    tifffile.imwrite(src, stack)
    rc = main(["correct", str(src), "-o", str(dst), "--tile-size", str(TILE), "--weights", str(weights), "--quiet",
               "--metric", "autocorr"])  # automatic (section-relative) thresholds on a synthetic texture
    assert rc == 0
    out = tifffile.imread(dst)
    assert out.shape == stack.shape and out.dtype == np.uint8
    changed = _changed_tiles(a, out[0])
    assert {(0, 1), (2, 3)} <= changed and len(changed) <= 4  # the soft tiles (plus at most a borderline one)


def test_errors(tmp_path, weights):
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint8))
    assert main(["correct", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif"), "--quiet"]) != 0
    assert main(["correct", str(src), "-o", str(tmp_path / "o.tif"), "--threshold", "abc",
                 "--weights", str(weights), "--quiet"]) != 0
    assert main(["correct", str(src), "-o", str(tmp_path / "o.tif"), "--weights", str(tmp_path / "nope.pt"),
                 "--quiet"]) != 0
    assert main(["correct", str(src), "-o", str(tmp_path / "nodir" / "o.tif"), "--weights", str(weights),
                 "--quiet"]) != 0
    assert not (tmp_path / "o.tif").exists()


def test_device_and_precision_names(tmp_path, weights, capsys):
    """One list of device and precision names for the CLI, the dock and the service: a typo is one
    line at parse time (exit 2); cuda:N is a device name (refused at load where there is no such GPU)."""
    import torch

    from napari_emdeblur.deblur.service import CorrectionParams

    src = tmp_path / "x.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint8))
    out = tmp_path / "o.tif"
    capsys.readouterr()
    assert main(["correct", str(src), "-o", str(out), "--device", "gpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device 'gpu'" in err[0]
    assert main(["correct", str(src), "-o", str(out), "--precision", "fp8", "--quiet"]) == 2
    if not torch.cuda.is_available():
        assert main(["correct", str(src), "-o", str(out), "--device", "cuda:1", "--tiles", "all", "--weights", str(weights),
                     "--quiet"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()
    for bad in ({"precision": "fp8"}, {"device": "gpu"}):
        with pytest.raises(ValueError):
            CorrectionParams(**bad).validate()
    CorrectionParams(device="CUDA:0", precision="bf16").validate()


def test_what_can_fail_is_checked_before_the_work(tmp_path, weights, capsys):
    """The output type, the weights and the device are checked before any tile is scored or
    corrected (they were found out after the whole correction)."""
    img = (_with_soft_tiles(_section(5)) * 255).round().astype(np.uint8)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img)
    base = ["correct", str(src), "--tile-size", str(TILE), "--device", "cpu"]
    cases = [(["-o", str(tmp_path / "o.png"), "--weights", str(weights)], "unsupported output type .png"),
             (["-o", str(tmp_path / "o.tif"), "--weights", str(tmp_path / "nope.pt")], "nope.pt")]
    if not torch.cuda.is_available():
        cases.append((["-o", str(tmp_path / "o.tif"), "--weights", str(weights), "--device", "cuda"],
                      "CUDA is not available"))
    for extra, said in cases:
        capsys.readouterr()
        assert main(base + extra) != 0
        err = capsys.readouterr().err
        assert said in err and "section 1:" not in err and "Correcting" not in err, err
    assert not list(tmp_path.glob("o.*"))
    # an OME-Zarr output (".ome.zarr": one suffix) is a known output type
    assert main(base + ["-o", str(tmp_path / "z.ome.zarr"), "--weights", str(weights), "--quiet"]) == 0
    assert (tmp_path / "z.ome.zarr").is_dir()
    # the thresholds of the blur metric are told in px, as they are given
    assert main(base + ["-o", str(tmp_path / "o.tif"), "--weights", str(weights), "--correct-px", "1.5"]) == 0
    assert "tiles to correct (excess blur > 1.5 px)" in capsys.readouterr().err
