"""Training loop: determinism, resume, checkpoints loadable, loss goes down, CLI (tiny, CPU)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from napari_emdeblur.deblur.train.loop import TrainConfig, iter_train, train
from napari_emdeblur.deblur.weights import load_model

TINY_ARCH = {"scale": 2, "width": 8, "n_groups": 1, "n_grabs": 1, "n_trunk": 1, "n_mask": 1}
# no noise and only Gaussian blur: a learnable task for a tiny model in a few dozen steps
EASY = {"kinds": ("gaussian",), "kind_weights": (1.0,), "sigma": (1.5, 2.5), "photons": (1e6, 1e6),
        "read_sigma": (0.0, 0.0), "smear_prob": 0.0, "fast_scan_corr_prob": 0.0, "sharp_prob": 0.0}


def _em_like(shape, seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 5)
    ridges = np.exp(-((field / (0.15 * field.std())) ** 2))
    return np.clip(0.7 - 0.5 * ridges, 0, 1)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    from skimage import io as skio

    root = tmp_path_factory.mktemp("emdata")
    tr, va = root / "train", root / "val"
    tr.mkdir()
    va.mkdir()
    for k in range(3):
        skio.imsave(tr / f"{k}.png", (_em_like((112, 120), k) * 255).astype(np.uint8), check_contrast=False)
    skio.imsave(va / "v.png", (_em_like((112, 112), 99) * 255).astype(np.uint8), check_contrast=False)
    return tr, va


def _cfg(data_dirs, out, **kw):
    tr, va = data_dirs
    base = dict(data=[str(tr)], val=[str(va)], out=str(out), model=TINY_ARCH, crop=32, batch=4, steps=12,
                lr=2e-3, warmup=2, log_every=2, checkpoint_every=6, val_crops=2, val_crop=48,
                threads=1, seed=3, ranges=EASY)
    base.update(kw)
    return TrainConfig(**base)


def test_same_seed_same_losses(data_dirs, tmp_path):
    a = train(_cfg(data_dirs, tmp_path / "a", steps=6, checkpoint_every=100))
    b = train(_cfg(data_dirs, tmp_path / "b", steps=6, checkpoint_every=100))
    c = train(_cfg(data_dirs, tmp_path / "c", steps=6, checkpoint_every=100, seed=4))
    assert a["losses"] == b["losses"] and len(a["losses"]) == 3
    assert a["losses"] != c["losses"]


def test_checkpoints_metrics_and_card(data_dirs, tmp_path):
    res = train(_cfg(data_dirs, tmp_path / "run"))
    out = tmp_path / "run"
    for name in ("checkpoint.pt", "model_latest.pt", "model_latest.json", "model_best.pt", "model_best.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    model, card = load_model(res["best"])
    assert card["model_type"] == "gran" and card["architecture"]["width"] == 8
    tr = card["training"]
    assert len(tr["data_files"]) == 3 and all(len(f["sha256"]) == 64 for f in tr["data_files"])
    assert tr["degradation_ranges"]["sigma"] == [1.5, 2.5] or tuple(tr["degradation_ranges"]["sigma"]) == (1.5, 2.5)
    assert np.isfinite(card["validation"]["psnr"]) and card["validation"]["n_crops"] == 2
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["step"] for r in rows if r["loss"]] == ["2", "4", "6", "8", "10", "12"]
    assert [r["step"] for r in rows if r["val_psnr"]] == ["6", "12"]


def test_resume_gives_identical_result(data_dirs, tmp_path):
    train(_cfg(data_dirs, tmp_path / "s", steps=8, checkpoint_every=4))
    part = _cfg(data_dirs, tmp_path / "r", steps=8, checkpoint_every=4)
    metrics = tmp_path / "r" / "metrics.csv"
    gen = iter_train(part)
    for _ in gen:  # interrupt after step 6 was logged: the last checkpoint is step 4's
        if metrics.exists() and any(r["step"] == "6" for r in csv.DictReader(metrics.open())):
            break
    gen.close()
    msgs = list(iter_train(dataclasses.replace(part, resume=True)))
    assert any("resumed" in getattr(m, "message", "") for m in msgs)
    m1, _ = load_model(tmp_path / "s" / "model_latest.pt")
    m2, _ = load_model(tmp_path / "r" / "model_latest.pt")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    # the metrics log reads as one run: the rows after the checkpoint are not there twice

    def rows(p):
        return [(r["step"], r["loss"], r["val_psnr"]) for r in csv.DictReader(p.open())]

    assert rows(metrics) == rows(tmp_path / "s" / "metrics.csv")


def test_resume_refuses_what_it_cannot_continue(data_dirs, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data_dirs, out, steps=4, checkpoint_every=4))
    before = (out / "metrics.csv").read_text()
    (out / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="checkpoint.pt: not a usable checkpoint"):
        list(iter_train(_cfg(data_dirs, out, steps=8, resume=True)))
    (out / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        list(iter_train(_cfg(data_dirs, out, steps=8, resume=True)))
    assert (out / "metrics.csv").read_text() == before  # nothing lost


def test_short_training_lowers_loss(data_dirs, tmp_path):
    # a task a tiny model learns in 60 steps: shot noise only (no blur), no augmentation
    den = {**EASY, "sharp_prob": 1.0, "photons": (30.0, 30.0)}
    res = train(_cfg(data_dirs, tmp_path / "l", steps=60, lr=5e-3, log_every=10, checkpoint_every=60,
                     ranges=den, augment=False))
    losses = res["losses"]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses


def test_adversarial_and_unet_and_fine_tune(data_dirs, tmp_path):
    res = train(_cfg(data_dirs, tmp_path / "adv", steps=4, adv_weight=0.01, checkpoint_every=100))
    assert all(np.isfinite(res["losses"]))
    ures = train(_cfg(data_dirs, tmp_path / "u", steps=2, model_type="unet", model={"base": 4, "depth": 2},
                      checkpoint_every=100))
    assert load_model(ures["best"])[1]["model_type"] == "unet"
    ft = train(_cfg(data_dirs, tmp_path / "ft", steps=2, init_weights=str(res["best"]), model={},
                    checkpoint_every=100))
    m, card = load_model(ft["best"])
    assert card["architecture"]["width"] == 8 and card["training"]["init_weights"] == str(res["best"])
    # grown, MSE loss: the card says what was trained, and growing needs weights to grow
    g = train(_cfg(data_dirs, tmp_path / "g", steps=2, init_weights=str(res["best"]), model={},
                   grow={"n_groups": card["architecture"]["n_groups"] + 1}, pixel_loss="mse",
                   checkpoint_every=100))
    gcard = load_model(g["best"])[1]
    assert gcard["architecture"]["n_groups"] == card["architecture"]["n_groups"] + 1
    assert gcard["training"]["loss"] == "MSE"
    with pytest.raises(ValueError, match="takes width and n_groups, not"):
        train(_cfg(data_dirs, tmp_path / "g4", steps=1, init_weights=str(res["best"]), grow={"n_half": 2}))
    with pytest.raises(ValueError, match="grow needs init_weights"):
        train(_cfg(data_dirs, tmp_path / "g2", steps=1, grow={"n_groups": 3}))
    with pytest.raises(ValueError, match="pixel_loss"):
        train(_cfg(data_dirs, tmp_path / "g3", steps=1, pixel_loss="l3"))


def test_time_budget_stops(data_dirs, tmp_path):
    msgs = list(iter_train(_cfg(data_dirs, tmp_path / "t", steps=10_000, max_minutes=0.0)))
    assert any("time budget" in getattr(m, "message", "") for m in msgs)
    assert msgs[-1].stage == "done" and msgs[-1].done == 0


def test_cli_train(data_dirs, tmp_path):
    from napari_emdeblur.cli import main

    tr, va = data_dirs
    out = tmp_path / "cli"
    rc = main(["train", "--data", str(tr), "--val", str(va), "--out", str(out), "--steps", "3", "--crop", "32",
               "--batch", "2", "--arch", '{"scale": 2, "width": 8, "n_groups": 1, "n_grabs": 1}', "--threads", "1",
               "--val-crops", "1", "--quiet"])
    assert rc == 0
    load_model(out / "model_best.pt")
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(out), "--steps", "1", "--quiet"]) != 0
    assert main(["train", "--data", str(tr), "--out", str(out), "--steps", "1", "--arch", "{bad", "--quiet"]) != 0


SB_TINY = {"half_width": 8, "width": 8, "n_groups": 1, "n_grabs": 1, "betas": [1.0, 3.0]}


def test_semi_blind_training_resumes_exactly_and_names_data_relative_to_the_root(data_dirs, tmp_path):
    """The semi-blind GRAN trains with the PSF estimated on each crop's context; folders are given relative to a
    data root (the card records them so); snapshots keep the weights of given steps; resume continues the exact
    schedule (weights, optimiser, RNG)."""
    tr, va = data_dirs
    root = tr.parent
    kw = dict(data=[tr.name], val=[va.name], data_root=str(root), model_type="sbgran", model=SB_TINY, crop=64,
              steps=8, checkpoint_every=4, snapshot_steps=[6])
    train(_cfg(data_dirs, tmp_path / "s", **kw))
    part = _cfg(data_dirs, tmp_path / "r", **kw)
    gen = iter_train(part)
    for m in gen:  # interrupt right after the step-4 checkpoint
        if m.message.startswith("step 4:"):
            break
    gen.close()
    list(iter_train(dataclasses.replace(part, resume=True)))
    m1, card = load_model(tmp_path / "s" / "model_latest.pt")
    m2, _ = load_model(tmp_path / "r" / "model_latest.pt")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert card["model_type"] == "sbgran" and card["training"]["steps"] == 8
    assert [f["path"] for f in card["training"]["data_files"]] == [f"train/{k}.png" for k in range(3)]
    assert card["training"]["data"] == ["train"]
    assert (tmp_path / "s" / "model_step6.pt").is_file() and load_model(tmp_path / "s" / "model_step6.pt")[1]


def test_folders_are_drawn_equally_often():
    """A small folder is sampled as often as a big one (sections weighted by area within a folder)."""
    from napari_emdeblur.deblur.train.data import PairSampler

    big = [np.full((400, 400), 0.2, np.float32) for _ in range(4)]
    small = [np.full((200, 200), 0.8, np.float32)]
    s = PairSampler(big + small, crop=64, augment=None, groups=[0, 0, 0, 0, 1])
    rng = np.random.default_rng(0)
    means = [s.sample(rng)[1].mean() for _ in range(400)]
    frac_small = np.mean(np.array(means) > 0.5)
    assert 0.4 < frac_small < 0.6, frac_small
