"""Tiled inference, QC-tile correction, device handling and the blur estimate (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emdeblur.deblur.infer import (
    InferenceParams,
    correct_image,
    iter_correct_image,
    iter_correct_tiles,
    ramp_1d,
    resolve_device,
    tile_starts,
    window_size,
)
from napari_emdeblur.deblur.nets.gran import GRAN, GRANConfig
from napari_emdeblur.qc.messages import Notice, Progress, TileResult

TINY = GRANConfig(scale=2, width=8, n_groups=1, n_grabs=1, n_trunk=1, n_mask=1)
CPU = dict(device="cpu", keep_sharp=False)  # mechanics of the tiling: the do-no-harm gate (test_gate.py) off


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GRAN(TINY).eval()


def _whole(model, img01: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(img01)[None, None]).numpy()[0, 0]


def _drain(gen):
    msgs = []
    while True:
        try:
            msgs.append(next(gen))
        except StopIteration as stop:
            return stop.value, msgs


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(77, 131), (64, 64), (150, 70)])
def test_dtype_and_shape_preserved(tiny, dtype, shape):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        img = rng.random(shape).astype(np.float32)
    else:
        img = rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    out = correct_image(img, tiny, InferenceParams(tile=64, overlap=16, batch=3, **CPU))
    assert out.dtype == img.dtype and out.shape == img.shape
    assert not np.array_equal(out, img)  # it did something


def test_float_image_outside_unit_range_keeps_its_range(tiny):
    img = (np.random.default_rng(1).random((70, 90)) * 3000 - 500).astype(np.float32)
    out = correct_image(img, tiny, InferenceParams(tile=64, overlap=16, **CPU))
    assert out.dtype == np.float32
    assert out.min() >= img.min() - 1e-3 and out.max() <= img.max() + 1e-3


def test_tiled_equals_whole_for_local_model(tiny):
    """With the graph units at their initial state (W = 0) the network is local (receptive
    field ~ 40 px); the image size is a multiple of the model's padding multiple (so the
    whole-image pass does not pad) and windows overlap by 32 px: the blended tiled output then
    equals the whole-image output within 1e-3. (A trained GRAN's graph units are global over
    each window, so for it tiled != whole by a small amount; that is what the overlap and the
    raised-cosine blending are for.)"""
    img = np.random.default_rng(2).random((200, 296)).astype(np.float32)
    whole = np.clip(_whole(tiny, img), 0, 1)
    out, msgs = _drain(iter_correct_image(img, tiny, InferenceParams(tile=96, overlap=32, batch=2, **CPU)))
    assert np.abs(out - whole).max() < 1e-3
    prog = [m for m in msgs if isinstance(m, Progress)]
    assert prog[-1].done == prog[-1].total == len(tile_starts(200, 96, 32)) * len(tile_starts(296, 96, 32))


def test_blending_weights_normalise_exactly():
    """An identity network (zero tail -> output = input through the global residual) run on
    overlapping windows of an odd-sized image reproduces the image: the blending is seamless."""
    m = GRAN(TINY).eval()
    torch.nn.init.zeros_(m.tail.weight)
    torch.nn.init.zeros_(m.tail.bias)
    img = (np.random.default_rng(3).random((157, 203)) * 0.8 + 0.1).astype(np.float32)
    out = correct_image(img, m, InferenceParams(tile=64, overlap=20, batch=4, **CPU))
    assert np.abs(out - img).max() < 1e-5
    img8 = np.random.default_rng(4).integers(0, 256, (157, 203)).astype(np.uint8)
    assert np.array_equal(correct_image(img8, m, InferenceParams(tile=64, overlap=20, **CPU)), img8)


def test_ramp_and_starts():
    w = ramp_1d(64, 16, True, True)
    assert w.min() > 0 and w[16:48].min() == 1.0 and np.allclose(w[:16], w[::-1][:16])
    s = tile_starts(200, 96, 32)
    assert s[0] == 0 and s[-1] == 200 - 96 and all(b - a <= 64 for a, b in zip(s, s[1:]))
    assert tile_starts(50, 96, 32) == [0]


@pytest.mark.parametrize("length", [97, 200, 513, 1750, 2000, 2048, 4096])
@pytest.mark.parametrize("tile,overlap,mult", [(96, 32, 1), (512, 32, 8), (512, 32, 16), (256, 48, 8)])
def test_window_size_covers_with_fewest_windows(length, tile, overlap, mult):
    """Balanced windows: never larger than ``tile``, the same number of windows as full tiles
    need (so no extra model call), each window covered, and no larger than needed."""
    size = window_size(length, tile, overlap, mult)
    full = tile_starts(length, min(tile, length), overlap)
    starts = tile_starts(length, size, overlap)
    assert size <= tile and len(starts) == len(full)
    covered = np.zeros(length, bool)
    for s0 in starts:
        covered[s0 : s0 + size] = True
    assert covered.all() and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))  # every seam has the full ramp
    if length > tile:
        assert size % mult == 0 or size == tile
        assert len(tile_starts(length, size - mult, overlap)) > len(full) or size - mult < 2 * overlap
    if (length, tile, overlap) == (2048, 512, 32):
        assert size == (440 if mult == 8 else 448)  # 26 % fewer pixels per window than 512


def test_correct_tiles_only_inside_boxes(tiny):
    img = np.random.default_rng(5).integers(0, 65535, (300, 260)).astype(np.uint16)
    boxes = [(0, 0, 128, 128), (128, 128, 128, 128), (256, 256, 44, 4)]
    msgs = list(iter_correct_tiles(img, tiny, boxes, InferenceParams(tile=256, overlap=32, batch=2, **CPU), z=3, grid_tile=128))
    res = [m for m in msgs if isinstance(m, TileResult)]
    assert len(res) == 3 and isinstance(msgs[-1], Progress) and msgs[-1].done == 3
    for r in res:
        y0, x0 = r.y0, r.x0
        box = next(b for b in boxes if b[:2] == (y0, x0))
        assert r.data.shape == box[2:] and r.data.dtype == np.uint16 and r.z == 3
        assert (r.row, r.col) == (y0 // 128, x0 // 128)
        # equals the model run on the same context window, cropped
        wy0, wx0 = max(0, y0 - 32), max(0, x0 - 32)
        wy1, wx1 = min(300, y0 + box[2] + 32), min(260, x0 + box[3] + 32)
        win = img[wy0:wy1, wx0:wx1].astype(np.float32) / 65535
        ref = np.rint(np.clip(_whole(tiny, win), 0, 1) * 65535).astype(np.uint16)
        ref = ref[y0 - wy0 : y0 - wy0 + box[2], x0 - wx0 : x0 - wx0 + box[3]]
        assert np.abs(r.data.astype(int) - ref.astype(int)).max() <= 1


def test_correct_tiles_large_box_uses_tiling(tiny):
    img = np.random.default_rng(6).random((180, 180)).astype(np.float32)
    res = [m for m in iter_correct_tiles(img, tiny, [(10, 10, 150, 150)], InferenceParams(tile=64, overlap=16, **CPU))
           if isinstance(m, TileResult)]
    assert res[0].data.shape == (150, 150)


def test_bad_inputs(tiny):
    img = np.zeros((50, 50), np.uint8)
    with pytest.raises(ValueError):
        list(iter_correct_tiles(img, tiny, [(40, 40, 20, 20)], InferenceParams(**CPU)))
    with pytest.raises(ValueError):
        correct_image(np.zeros((2, 50, 50), np.uint8), tiny, InferenceParams(**CPU))
    with pytest.raises(ValueError):
        InferenceParams(tile=64, overlap=40).validate()
    with pytest.raises(ValueError):
        InferenceParams(precision="int8").validate()


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


class _OOMAboveBatch(torch.nn.Module):
    """A real module that raises torch.cuda.OutOfMemoryError for batches larger than ``limit``
    (there is no GPU here to exhaust); otherwise the identity."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x


def test_oom_halves_batch_and_retries():
    m = _OOMAboveBatch(limit=1)
    img = np.random.default_rng(7).random((200, 200)).astype(np.float32)
    out, msgs = _drain(iter_correct_image(img, m, InferenceParams(tile=64, overlap=16, batch=4, **CPU)))
    notices = [n for n in msgs if isinstance(n, Notice)]
    assert [n.message for n in notices] == ["GPU out of memory: retrying with batch 2",
                                           "GPU out of memory: retrying with batch 1"]
    assert np.abs(out - img).max() < 1e-5
    assert max(m.calls[2:]) == 1


def test_oom_at_batch_one_halves_tile():
    class Tiny(torch.nn.Module):  # OOM only for windows above 64 px
        def forward(self, x):
            if x.shape[-1] > 64:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return x

    img = np.random.default_rng(8).random((150, 150)).astype(np.float32)
    out, msgs = _drain(iter_correct_image(img, Tiny(), InferenceParams(tile=128, overlap=16, batch=1, **CPU)))
    assert any("tile 64" in n.message for n in msgs if isinstance(n, Notice))
    assert np.abs(out - img).max() < 1e-5

    # QC tiles whose context window (96 px) fits the 128 px inference tile: an OOM at batch 1
    # blend-tiles the window in 64 px tiles instead of failing
    boxes = [(16, 16, 64, 64), (70, 70, 64, 64)]
    _, msgs = _drain(iter_correct_tiles(img, Tiny(), boxes, InferenceParams(tile=128, overlap=16, batch=2, **CPU)))
    notices = [n.message for n in msgs if isinstance(n, Notice)]
    assert notices[0] == "GPU out of memory: retrying with batch 1"
    assert notices[1] == "GPU out of memory for a 96x96 window: retrying with tile 64 px"
    results = [m for m in msgs if isinstance(m, TileResult)]
    assert [(r.y0, r.x0) for r in results] == [(16, 16), (70, 70)]
    for r in results:
        assert np.abs(r.data - img[r.y0 : r.y0 + 64, r.x0 : r.x0 + 64]).max() < 1e-5

    # no tile of at least MIN_TILE (64 px) fits: MemoryError, for a window larger or smaller than 64 px
    class Tinier(torch.nn.Module):  # OOM above 40 px
        def forward(self, x):
            if x.shape[-1] > 40:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return x

    for box in [(0, 0, 60, 60), (0, 0, 40, 40)]:  # windows 76 and 56 px
        with pytest.raises(MemoryError, match="64 px"):
            _drain(iter_correct_tiles(img, Tinier(), [box], InferenceParams(tile=128, overlap=16, **CPU)))


def test_non_oom_errors_propagate():
    class Bad(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape"):
        correct_image(np.zeros((64, 64), np.float32), Bad(), InferenceParams(**CPU))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_half_precision_close_to_fp32(tiny, precision):
    img = np.random.default_rng(9).integers(0, 256, (300, 260)).astype(np.uint8)
    ref = correct_image(img, tiny, InferenceParams(tile=128, overlap=32, device="cpu"))
    out = correct_image(img, tiny, InferenceParams(tile=128, overlap=32, device="cuda", precision=precision))
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - ref.astype(int)).max() <= 4
    tiny.to("cpu")


# --------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("name", ["sbgran_em_v2", "gran_em_v1"])
def test_shipped_weights_raise_psnr_on_held_out_em(shared_data, name):
    import tifffile

    from napari_emdeblur.deblur.train.degrade import Degradation
    from napari_emdeblur.deblur.weights import load_model, shipped_weights_path

    model, _ = load_model(shipped_weights_path(name))
    sharp = tifffile.imread(shared_data / "drosophila_vnc_sstem" / "stack2" / "10.tif")[256:768, 256:768]
    sharp01 = sharp.astype(np.float32) / 255
    rng = np.random.default_rng(0)
    gains = []
    for d in [Degradation("gaussian", sigma=2.0, photons=300), Degradation("defocus", radius=3.0, probe_sigma=0.5, photons=300)]:
        blurred = np.clip(d.apply(sharp01, rng), 0, 1)
        b8 = np.rint(blurred * 255).astype(np.uint8)
        out = correct_image(b8, model, InferenceParams(tile=256, overlap=32, **CPU))

        def psnr(a):
            return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - sharp) ** 2))

        gains.append(psnr(out) - psnr(b8))
    assert min(gains) > 0.5, gains


# --------------------------------------------------------------------------- blur estimate
def _em_like(shape=(512, 512), seed=0) -> np.ndarray:
    """Membrane-like synthetic texture (thin dark ridges on a mottled background)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 6)
    ridges = np.exp(-((field / (0.15 * field.std())) ** 2))
    tex = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    img = 0.6 - 0.45 * ridges + 0.05 * tex / tex.std()
    return np.clip(img, 0, 1).astype(np.float32)


def test_psf_grid_tracks_gaussian_sigma():
    from napari_emdeblur.deblur.train.degrade import Degradation
    from napari_emdeblur.qc.psf import estimate_psf_grid

    img = _em_like()
    rng = np.random.default_rng(0)
    est = []
    for s in [1.0, 2.0, 3.0]:
        deg = np.clip(Degradation("gaussian", sigma=s, photons=300).apply(img, rng), 0, 1)
        t = estimate_psf_grid(deg, 256).sigma_major
        assert t.shape == (2, 2)
        est.append(float(np.nanmedian(t)))
    assert est[0] < est[1] < est[2]
    assert all(abs(e - s) < 0.6 for e, s in zip(est, [1.0, 2.0, 3.0])), est


def test_psf_grid_shape_nan_and_contrast_invariance():
    from napari_emdeblur.qc.psf import estimate_psf_grid

    img = _em_like((280, 530), seed=1)
    a = estimate_psf_grid(img, 256).sigma_major
    assert a.shape == (2, 3)
    assert np.isfinite(a[0, :2]).all()
    assert np.isnan(a[1, :]).all() and np.isnan(a[:, 2]).all()  # partial tiles of 24 / 18 px
    flat = np.full((256, 256), 0.5, np.float32)
    assert np.isnan(estimate_psf_grid(flat, 256).sigma_major).all()
    b = estimate_psf_grid(img * 0.8 + 0.1, 256, value_range_mode=(0.0, 1.0)).sigma_major
    assert np.allclose(a, b, equal_nan=True, atol=0.05)


def test_psf_grid_on_held_out_real_em(shared_data):
    """Error on a held-out real section with synthetic Gaussian blur (the section's own ~0.5 px in
    quadrature is part of what the estimate reads)."""
    import tifffile

    from napari_emdeblur.deblur.train.degrade import Degradation
    from napari_emdeblur.qc.psf import estimate_psf_grid

    sharp = tifffile.imread(shared_data / "drosophila_vnc_sstem" / "stack2" / "05.tif").astype(np.float32) / 255
    rng = np.random.default_rng(0)
    errs = []
    for s in [1.0, 2.0, 3.0]:
        deg = np.clip(np.round(Degradation("gaussian", sigma=s, photons=200).apply(sharp, rng) * 255), 0, 255)
        t = estimate_psf_grid(deg.astype(np.uint8), 256).sigma_major
        errs.append(np.nanmedian(t) - s)
    assert max(abs(e) for e in errs) < 0.5, errs


def test_fidelity_check_accepts_a_faithful_correction_and_flags_invented_structure():
    from napari_emdeblur.deblur.fidelity import check_fidelity
    from napari_emdeblur.deblur.train.degrade import Degradation

    sharp = _em_like((256, 256), seed=3)
    rng = np.random.default_rng(1)
    blurred = np.clip(Degradation("gaussian", sigma=2.0, photons=300).apply(sharp, rng), 0, 1)
    good = check_fidelity(blurred, sharp)
    assert 0.5 < good.ratio < 2.2, good
    assert abs(good.blur_major - 2.0) < 0.6
    invented = _em_like((256, 256), seed=9)  # other membranes than the input's
    assert check_fidelity(blurred, invented).ratio > 4.0
    lines = np.clip(sharp - 0.4 * ((np.arange(256) % 40) < 4)[None, :], 0, 1)  # membranes added
    assert check_fidelity(blurred, lines).ratio > 3.0
    assert check_fidelity(blurred, blurred).ratio < 0.5  # nothing removed, nothing to explain
    assert np.isnan(check_fidelity(blurred[:64, :64], sharp[:64, :64]).ratio)  # too small to estimate


def test_self_ensemble_averages_the_eight_flips_and_rotations():
    """Quality mode: the model runs on the 8 dihedral transforms of each window, mapped back, averaged."""
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False, padding_mode="reflect")
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 0.4, 0.6], [0.0, 0.0, 0.0]]]]))  # shifts along +x
    img = np.clip(_em_like((96, 128), seed=2) * 255, 0, 255).astype(np.uint8)
    single = correct_image(img, conv, InferenceParams(tile=128, overlap=0, batch=1, device="cpu", keep_sharp=False))
    ens = correct_image(img, conv, InferenceParams(tile=128, overlap=0, batch=1, device="cpu", ensemble=True,
                                                   keep_sharp=False))
    # the ensemble of a shift is symmetric: the average of the shifted image in 4 directions
    x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    outs = []
    for k in range(4):
        for flip in (False, True):
            v = torch.rot90(x, k, (-2, -1))
            v = torch.flip(v, (-1,)) if flip else v
            y = conv(v)
            y = torch.flip(y, (-1,)) if flip else y
            outs.append(torch.rot90(y, -k, (-2, -1)))
    expect = np.rint(np.clip(torch.stack(outs).mean(0)[0, 0].detach().numpy(), 0, 1) * 255).astype(np.uint8)
    assert np.abs(ens.astype(int) - expect.astype(int)).max() <= 1
    assert np.abs(ens.astype(int) - single.astype(int)).max() > 5
