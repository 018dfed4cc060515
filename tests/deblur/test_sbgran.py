"""Semi-blind GRAN: Wiener candidates, shapes, seams, cards (the shipped weights are checked in test_model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emdeblur.deblur.nets.sbgran import SBGRAN, SBGRANConfig, estimate_params
from napari_emdeblur.deblur.nets.wiener import psf_params, wiener
from napari_emdeblur.deblur.train.degrade import Degradation
from napari_emdeblur.qc.psf import estimate_psf_tiles


def _texture(seed: int = 0, n: int = 256) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(n, n)), 2.0)
    x = np.abs(ndimage.sobel(x, 0)) + np.abs(ndimage.sobel(x, 1))
    return (0.8 - 0.6 * x / x.max()).astype(np.float32)


def test_wiener_delta_psf_no_noise_is_identity():
    x = torch.from_numpy(_texture())[None, None]
    params = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 2.0]])
    out = wiener(x, params, (1.0, 3.0))
    assert out.shape == (1, 2, 256, 256)
    torch.testing.assert_close(out[:, :1], x, atol=1e-4, rtol=0)


def test_wiener_with_estimated_psf_beats_the_blurred_input():
    sharp = _texture(1)
    d = Degradation(kind="gaussian", sigma=2.0, photons=500, read_sigma=0.005)
    blurred = d.apply(sharp, np.random.default_rng(0)).astype(np.float32)
    p = torch.from_numpy(psf_params(estimate_psf_tiles(blurred[None])))
    w = wiener(torch.from_numpy(blurred)[None, None], p, (3.0,))[0, 0].numpy()
    m = 24
    err_in = np.mean((blurred - sharp)[m:-m, m:-m] ** 2)
    err_w = np.mean((np.clip(w, 0, 1) - sharp)[m:-m, m:-m] ** 2)
    assert err_w < 0.85 * err_in


def test_psf_params_are_finite_for_flat_tiles():
    p = psf_params(estimate_psf_tiles(np.full((2, 128, 128), 0.3, np.float32)))
    assert np.isfinite(p).all()
    x = torch.full((2, 1, 64, 64), 0.3)
    out = wiener(x, torch.from_numpy(p), (1.0,))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("graph", [True, False])
@pytest.mark.parametrize("hw", [(64, 64), (97, 131)])
def test_shape_dtype_and_given_params(graph, hw):
    torch.manual_seed(0)
    m = SBGRAN(SBGRANConfig(half_width=8, width=8, n_groups=1, n_grabs=1, graph=graph)).eval()
    x = torch.from_numpy(np.stack([_texture(k)[: hw[0], : hw[1]] for k in range(2)])[:, None])
    with torch.inference_mode():
        y = m(x)
        y2 = m(x, torch.from_numpy(estimate_params(x.numpy())))
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, y2)
    assert torch.isfinite(y).all()


def test_graph_off_has_no_graph_units():
    on = SBGRAN(SBGRANConfig(graph=True))
    off = SBGRAN(SBGRANConfig(graph=False))
    assert any("graph.theta" in k for k in on.state_dict())
    assert not any("graph.theta" in k for k in off.state_dict())


def test_card_round_trip(tmp_path):
    from napari_emdeblur.deblur.weights import load_model, save_model

    torch.manual_seed(0)
    m = SBGRAN(SBGRANConfig(half_width=8, width=8, n_groups=1, n_grabs=1, betas=[2.0, 5.0]))
    save_model(m, tmp_path / "sb.pt", {"description": "test"})
    m2, card = load_model(tmp_path / "sb.pt")
    assert card["model_type"] == "sbgran" and card["architecture"]["betas"] == [2.0, 5.0]
    x = torch.from_numpy(_texture(3)[:96, :96])[None, None]
    with torch.inference_mode():
        torch.testing.assert_close(m.eval()(x), m2(x))


def test_tiled_output_is_seamless():
    """Whole-image and blended-tiled outputs agree away from nothing in particular: no seams."""
    from napari_emdeblur.deblur.infer import InferenceParams, correct_image

    torch.manual_seed(0)
    m = SBGRAN(SBGRANConfig(half_width=8, width=8, n_groups=1, n_grabs=1)).eval()
    with torch.no_grad():  # a non-trivial mixture so that the candidates matter
        m.tail.bias.normal_(0, 0.5)
    img = np.clip(np.round(_texture(4, 320) * 255), 0, 255).astype(np.uint8)
    whole = correct_image(img, m, InferenceParams(tile=320, overlap=32, batch=1, device="cpu"))
    tiled = correct_image(img, m, InferenceParams(tile=128, overlap=32, batch=2, device="cpu"))
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99.9) <= 16
    # a seam would show as a step along the window borders: compare border columns with others
    col = diff.mean(axis=0)
    assert col.max() < 6.0


def test_grow_sbgran_deeper_preserves_the_function_until_trained():
    from napari_emdeblur.deblur.nets.sbgran import grow_sbgran

    torch.manual_seed(2)
    small = SBGRAN(SBGRANConfig(half_width=8, width=8, n_groups=1, n_grabs=1, n_half=1))
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.from_numpy(_texture(3, 64))[None, None]
    params = torch.from_numpy(estimate_params(x.numpy()))
    big = grow_sbgran(small, n_groups=3, n_half=2)
    assert (big.cfg.n_groups, big.cfg.n_half, len(big.groups), len(big.half_in)) == (3, 2, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(big(x, params), small(x, params), atol=1e-5, rtol=0)
    # the new group and blocks are identities only until trained: their closing convs get a gradient
    torch.nn.functional.mse_loss(big(x, params), torch.zeros_like(x)).backward()
    assert big.groups[2].tail.weight.grad.abs().sum() > 0
    assert big.half_out[1].c2.weight.grad.abs().sum() > 0
    assert grow_sbgran(small) is small
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_sbgran(big, n_groups=2)
