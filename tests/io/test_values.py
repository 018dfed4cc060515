"""Value ranges: uint16 data with fewer significant bits reaches the model at full contrast."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_emdeblur.io.values import parse_range_mode, significant_bits, value_range


@pytest.mark.parametrize(
    "img, mode, expected",
    [
        (np.array([[0, 200]], np.uint8), "auto", (0.0, 255.0)),
        (np.array([[0, 4000]], np.uint16), "auto", (0.0, 4095.0)),
        (np.array([[0, 4096]], np.uint16), "auto", (0.0, 8191.0)),
        (np.array([[0, 65535]], np.uint16), "auto", (0.0, 65535.0)),
        (np.array([[0, 3]], np.uint16), "auto", (0.0, 255.0)),  # at least 8 bits
        (np.array([[0, 4000]], np.uint16), "dtype", (0.0, 65535.0)),
        (np.array([[0, 4000]], np.uint16), (100, 3000), (100.0, 3000.0)),
        (np.array([[0, 4000]], np.uint16), "100, 3000", (100.0, 3000.0)),
        (np.array([[0.2, 0.7]], np.float32), "auto", (0.0, 1.0)),
        (np.array([[-5.0, 20.0]], np.float32), "auto", (-5.0, 20.0)),
    ],
)
def test_value_range_modes(img, mode, expected):
    assert value_range(img, mode) == expected


@pytest.mark.parametrize("bad", ["bits", "1,2,3", "5,1", "a,b", (3, 3), (0, float("nan")), 7])
def test_bad_range_modes_are_refused(bad):
    with pytest.raises(ValueError, match="value range"):
        parse_range_mode(bad)


def test_significant_bits():
    assert significant_bits(np.array([1023], np.uint16)) == 10
    assert significant_bits(np.array([1024], np.uint16)) == 11
    assert significant_bits(np.zeros((2, 2), np.uint16)) == 8


def _twelve_bit_case():
    """A real EM tile (bundled sample ground truth) blurred, stored as 12-bit data in uint16."""
    from napari_emdeblur._sample_data import sample_paths
    from napari_emdeblur.deblur.train.degrade import Degradation

    sharp8 = tifffile.imread(sample_paths()["ground_truth"])[:384, :384]
    sharp01 = sharp8.astype(np.float32) / 255.0
    blurred = np.clip(Degradation("gaussian", sigma=2.0, photons=300).apply(sharp01, np.random.default_rng(3)), 0, 1)
    to12 = lambda a: np.rint(a * 4095).astype(np.uint16)  # noqa: E731
    return to12(sharp01), to12(blurred)


def _psnr(ref, img, peak):
    return 10 * np.log10(peak**2 / np.mean((ref.astype(np.float64) - img.astype(np.float64)) ** 2))


def test_twelve_bit_uint16_is_corrected_at_its_own_scale():
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image
    from napari_emdeblur.deblur.weights import load_model

    model, _ = load_model(device="cpu")
    sharp, blurred = _twelve_bit_case()
    p = dict(tile=256, overlap=32, device="cpu")
    auto = correct_image(blurred, model, InferenceParams(**p))
    dtype = correct_image(blurred, model, InferenceParams(value_range="dtype", **p))
    assert auto.dtype == np.uint16 and auto.max() <= 4095
    gain_auto = _psnr(sharp, auto, 4095) - _psnr(sharp, blurred, 4095)
    gain_dtype = _psnr(sharp, dtype, 4095) - _psnr(sharp, blurred, 4095)
    # at /65535 the tile is a dark, flat picture to the model; at /4095 it is EM as trained on
    assert gain_auto > 1.0, gain_auto
    assert gain_auto > gain_dtype + 0.5, (gain_auto, gain_dtype)
    # auto is the same as stating the range explicitly
    explicit = correct_image(blurred, model, InferenceParams(value_range=(0, 4095), **p))
    np.testing.assert_array_equal(auto, explicit)


def test_correction_report_psnr_uses_the_significant_range():
    from napari_emdeblur.deblur.metrics import psnr_ssim
    from napari_emdeblur.deblur.selection import Selection
    from napari_emdeblur.deblur.service import CorrectionParams, iter_correct
    from napari_emdeblur.qc.messages import drain

    sharp, blurred = _twelve_bit_case()
    params = CorrectionParams(device="cpu", qc_tile=128, tile=256, batch=2)
    report = drain(iter_correct(blurred, Selection.of_tiles([(0, 1, 1)]), params, ground_truth=sharp))
    (rep,) = report.tiles
    ref, orig = sharp[128:256, 128:256], blurred[128:256, 128:256]
    assert rep.psnr_before == pytest.approx(psnr_ssim(ref, orig, 4095.0)[0])
    assert rep.psnr_after > rep.psnr_before + 1.0


@pytest.mark.slow
def test_cli_refuses_a_bad_value_range(tmp_path):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint16))
    r = subprocess.run([sys.executable, "-m", "napari_emdeblur.cli", "correct", str(src), "-o",
                        str(tmp_path / "out.tif"), "--value-range", "9,1", "--device", "cpu"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "value range" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.tif").exists()


def test_pipeline_config_checks_the_value_range():
    from napari_emdeblur.pipeline.config import PipelineConfig, correction_params

    with pytest.raises(ValueError, match="value range"):
        PipelineConfig(value_range="twelve")
    assert correction_params(PipelineConfig(value_range="0,4095"), "cpu").value_range == "0,4095"
