"""GRAN / U-Net architecture and the weights + model-card contract (CPU, tiny configs)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from napari_emdeblur.deblur.nets.gran import GRAN, GRANConfig, GraphReasoning, count_parameters
from napari_emdeblur.deblur.nets.unet import UNet, UNetConfig
from napari_emdeblur.deblur.weights import (
    WeightsError,
    card_path,
    load_card_hash,
    load_model,
    read_card,
    save_model,
    sha256_file,
    shipped_weights_path,
)

TINY = GRANConfig(scale=2, width=8, n_groups=1, n_grabs=1, n_trunk=1, n_mask=1)
SHIPPED_CFG = GRANConfig(scale=4, width=32, n_groups=2, n_grabs=2, n_trunk=2, n_mask=1, mask_down=1)


def _randomise_graph(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, GraphReasoning):
            with torch.no_grad():
                m.W.weight.copy_(torch.randn(m.W.weight.shape, generator=g) * 0.3)


@pytest.mark.parametrize("shape", [(77, 131), (64, 64), (5, 9), (130, 67)])
def test_gran_any_size(shape):
    torch.manual_seed(0)
    m = GRAN(TINY).eval()
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_graph_unit_matches_explicit_affinity_matrix():
    """The linear-cost evaluation equals W(R g(V)) + V with R = theta^T phi / N built explicitly."""
    torch.manual_seed(1)
    gr = GraphReasoning(6, 3)
    with torch.no_grad():
        gr.W.weight.normal_()
        gr.W.bias.normal_()
    v = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        fast = gr(v)
        n = 35
        t = gr.theta(v).flatten(2)
        p = gr.phi(v).flatten(2)
        g = gr.g(v).flatten(2)
        R = torch.einsum("bin,bim->bnm", t, p) / n  # (B, N, N) fully connected affinity
        rg = torch.einsum("bnm,bim->bin", R, g).reshape(2, 3, 5, 7)
        slow = v + gr.W(rg)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_graph_unit_starts_as_identity_and_is_global():
    gr = GraphReasoning(4, 2)
    v = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(gr(v), v)  # W zero-initialised
        gr.W.weight.fill_(0.5)
        a = gr(v)
        v2 = v.clone()
        v2[0, :, 5, 5] += 3.0  # a far-away node changes every node's update
        b = gr(v2)
    assert (a[0, :, 0, 0] - b[0, :, 0, 0]).abs().max() > 1e-4


def test_gran_is_deterministic_and_residual():
    torch.manual_seed(0)
    m = GRAN(TINY).eval()
    x = torch.rand(1, 1, 48, 40)
    with torch.no_grad():
        a, b = m(x), m(x)
        assert torch.equal(a, b)
        torch.nn.init.zeros_(m.tail.weight)
        torch.nn.init.zeros_(m.tail.bias)
        assert torch.allclose(m(x), x, atol=1e-6)  # global residual


def test_unet_shape_and_comparable_size():
    u = UNet(UNetConfig()).eval()
    with torch.no_grad():
        y = u(torch.rand(1, 1, 77, 131))
    assert y.shape == (1, 1, 77, 131)
    ratio = count_parameters(u) / count_parameters(GRAN(SHIPPED_CFG))
    assert 0.7 < ratio < 1.3, ratio


def test_config_round_trip_and_unknown_keys():
    d = SHIPPED_CFG.to_dict()
    assert GRANConfig.from_dict(d) == SHIPPED_CFG
    with pytest.raises(ValueError):
        GRANConfig.from_dict({**d, "bogus": 1})


# --------------------------------------------------------------------------- weights + card
@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    m = GRAN(TINY).eval()
    _randomise_graph(m)
    path = tmp_path / "m.pt"
    card = save_model(m, path, {"training": {"steps": 3}, "validation": {"psnr": 1.0}})
    return m, path, card


def test_save_load_round_trip(saved):
    m, path, card = saved
    assert card["weights_sha256"] == sha256_file(path)
    assert card["model_type"] == "gran" and card["architecture"] == TINY.to_dict()
    m2, card2 = load_model(path)
    assert card2["training"]["steps"] == 3
    x = torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert not m2.training
    assert len(load_card_hash(path)) == 64


def test_unet_round_trip(tmp_path):
    u = UNet(UNetConfig(base=4, depth=2))
    save_model(u, tmp_path / "u.pt")
    u2, card = load_model(tmp_path / "u.pt")
    assert card["model_type"] == "unet" and isinstance(u2, UNet)


def test_missing_card(saved):
    _, path, _ = saved
    card_path(path).unlink()
    with pytest.raises(WeightsError, match="card"):
        load_model(path)


def test_missing_weights(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_corrupted_weights_sha_mismatch(saved):
    _, path, _ = saved
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="sha256"):
        load_model(path)


def test_unreadable_weights_with_matching_sha(saved):
    _, path, _ = saved
    path.write_bytes(b"not a torch file")
    card = json.loads(card_path(path).read_text())
    card["weights_sha256"] = sha256_file(path)
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="could not be read"):
        load_model(path)


def test_shape_mismatch(saved):
    _, path, _ = saved
    card = json.loads(card_path(path).read_text())
    card["architecture"]["width"] = 12
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="shape"):
        load_model(path)


def test_invalid_card_json(saved):
    _, path, _ = saved
    card_path(path).write_text("{not json")
    with pytest.raises(WeightsError, match="JSON"):
        read_card(path)
    assert issubclass(WeightsError, ValueError)


# --------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("name, model_type", [("sbgran_em_v2", "sbgran"), ("gran_em_v1", "gran")])
def test_shipped_weights_cards(name, model_type):
    """Both shipped models load with their cards; the semi-blind one is the default; the cards name their
    training data relative to the data root (no machine paths)."""
    from napari_emdeblur.deblur.nets.sbgran import SBGRAN
    from napari_emdeblur.deblur.shipped import SHIPPED_NAME

    path = shipped_weights_path(name)
    model, card = load_model(path)
    assert card["model_type"] == model_type
    assert isinstance(model, SBGRAN if model_type == "sbgran" else GRAN)
    assert path.stat().st_size <= 20 * 2**20
    tr = card["training"]
    assert tr["data_files"] and all(len(f["sha256"]) == 64 for f in tr["data_files"])
    assert not any(f["path"].startswith("/") or ".." in f["path"] for f in tr["data_files"])
    assert "degradation_ranges" in tr and tr["steps"] > 0
    v = card["validation"]
    assert v["psnr"] > v["input_psnr"] and v["ssim"] > v["input_ssim"]
    assert SHIPPED_NAME == "sbgran_em_v2" and load_model()[1]["model_type"] == "sbgran"


def test_copy_keeps_card_valid(saved, tmp_path):
    """Shipping = copying .pt + .json: the card's sha256 stays valid under a new name."""
    m, path, _ = saved
    dst = tmp_path / "copy" / "gran_x.pt"
    dst.parent.mkdir()
    shutil.copy(path, dst)
    shutil.copy(card_path(path), card_path(dst))
    m2, card2 = load_model(dst)
    assert card2["weights_sha256"] == sha256_file(dst)
    x = torch.rand(1, 1, 24, 20)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_widen_gran_preserves_the_function_and_can_learn():
    from napari_emdeblur.deblur.nets.gran import widen_gran

    torch.manual_seed(0)
    small = GRAN(GRANConfig(scale=2, width=8, n_groups=2, n_grabs=2, n_trunk=2, n_mask=1, mask_down=1))
    with torch.no_grad():  # make the zero-initialised graph outputs non-trivial first
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 1, 40, 36)
    wide = widen_gran(small, 12)
    assert wide.cfg.width == 12 and count_parameters(wide) > count_parameters(small)
    with torch.no_grad():
        ref, out = small(x), wide(x)
    assert torch.allclose(ref, out, atol=1e-5), float((ref - out).abs().max())
    # the new channels are live: one step changes the output beyond what the old weights give
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    loss = torch.nn.functional.mse_loss(wide(x), torch.zeros_like(x))
    loss.backward()
    tail_cross = wide.tail.weight.grad[:, 8:].abs().sum()  # new channels -> output
    assert tail_cross > 0
    opt.step()
    with torch.no_grad():
        assert not torch.allclose(wide(x), out, atol=1e-4)
    with pytest.raises(ValueError, match="cannot widen"):
        widen_gran(small, 4)


def test_grow_gran_deeper_and_wider_preserves_the_function():
    from napari_emdeblur.deblur.nets.gran import grow_gran

    torch.manual_seed(1)
    small = GRAN(GRANConfig(scale=2, width=8, n_groups=1, n_grabs=1, n_trunk=1))
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 1, 48, 40)
    big = grow_gran(small, width=12, n_groups=3)
    assert (big.cfg.width, big.cfg.n_groups) == (12, 3)
    with torch.no_grad():
        assert torch.allclose(small(x), big(x), atol=1e-5)
    # the new groups are identities only until trained: their closing conv gets a gradient
    torch.nn.functional.mse_loss(big(x), torch.zeros_like(x)).backward()
    assert big.groups[2].tail.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_gran(big, n_groups=2)
