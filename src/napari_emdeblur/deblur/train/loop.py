"""Training loop for GRAN (and the U-Net baseline) as a generator of ``Progress`` messages.

``iter_train(cfg)`` draws sharp crops from ``cfg.data`` folders, degrades them on the fly
(``degrade.DegradationRanges``) and minimises L1 or MSE (+ ``adv_weight`` x an LSGAN patch
discriminator loss when > 0). It is seeded (same config + seed on CPU -> identical losses),
writes atomically into ``cfg.out``:

    checkpoint.pt            full state for ``resume`` (model, optimiser(s), step, RNG states)
    model_latest.pt/.json    weights + model card at the last checkpoint (``load_model``-able)
    model_best.pt/.json      the checkpoint with the best validation PSNR
    metrics.csv              step, elapsed_s, loss, lr, val_psnr, val_ssim

and stops after ``steps`` steps or ``max_minutes`` of wall time, whichever comes first; the
learning-rate schedule (linear warm-up, cosine decay) follows whichever of the two is further
along, so a time-limited run still ends with a decayed learning rate.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...io.atomic import atomic_write_text
from ...qc.messages import Notice, Progress
from ..device import resolve_device
from ..metrics import psnr, ssim
from ..nets.sbgran import estimate_params
from ..weights import atomic_torch_save, build_model, checked_config, load_model, save_model
from .data import Augment, PairSampler, file_manifest, load_grouped_sections, make_val_set
from .degrade import DegradationRanges

PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
DESCRIPTIONS = {
    "gran": "GRAN EM deblurring model",
    "unet": "U-Net EM deblurring baseline",
    "sbgran": "Semi-blind GRAN EM deblurring model (estimated PSF, Wiener candidates, graph reasoning)",
}


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # folders (or files) of sharp EM images
    val: list[str] = field(default_factory=list)  # held-out folders for validation
    out: str = "runs/gran"
    model_type: str = "gran"  # gran | unet
    model: dict = field(default_factory=dict)  # architecture overrides (GRANConfig / UNetConfig)
    crop: int = 128
    batch: int = 8
    steps: int = 20000
    max_minutes: float | None = None  # wall-time stop (None = only ``steps``)
    lr: float = 5e-4
    lr_min: float = 1e-5
    warmup: int = 100
    adv_weight: float = 0.0  # patch discriminator weight (0 = pure pixel loss)
    pixel_loss: str = "l1"  # l1 | mse (mse optimises PSNR directly; used for fine-tuning)
    seed: int = 0
    val_seed: int | None = None  # seed of the fixed validation crops (None = seed + 1)
    resume: bool = False
    amp: bool = False  # bf16/fp16 autocast (CUDA only)
    threads: int | None = None  # torch CPU threads (None = leave as is)
    device: str = "cpu"
    log_every: int = 50
    checkpoint_every: int = 500
    val_crops: int = 16
    val_crop: int = 256
    init_weights: str | None = None  # start from these weights (fine-tuning)
    grow: dict = field(default_factory=dict)  # grow the init model first (GROWABLE: gran / sbgran)
    ranges: dict = field(default_factory=dict)  # DegradationRanges overrides
    augment: bool = True
    data_root: str | None = None  # data/val entries are relative to this folder (cards name them so)
    snapshot_steps: list[int] = field(default_factory=list)  # also keep model_step<N>.pt at these steps
    overwrite: bool = False  # replace the files of a previous run in ``out`` (else refused, unless resume)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting for values that cannot train (before any file is read)."""

        def whole(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be a whole number >= {lo}, got {v!r}")

        def number(name: str, lo: float, strict: bool = False, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < lo or (strict and v == lo):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo:g}, got {v!r}")

        for name, lo in (("steps", 1), ("batch", 1), ("crop", 16), ("warmup", 0), ("log_every", 1),
                         ("checkpoint_every", 1), ("val_crops", 1), ("val_crop", 16)):
            whole(name, lo)
        if self.threads is not None:
            whole("threads", 1)
        number("lr", 0.0, strict=True)
        number("lr_min", 0.0)
        number("adv_weight", 0.0)
        number("max_minutes", 0.0, optional=True)
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {sorted(PIXEL_LOSSES)}, not {self.pixel_loss!r}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.snapshot_steps):
            raise ValueError(f"snapshot_steps must be whole numbers >= 1, got {self.snapshot_steps!r}")
        DegradationRanges.with_overrides(self.ranges)  # ValueError names the key
        if not self.init_weights:
            checked_config(self.model_type, self.model, source="architecture")


class PatchDiscriminator(nn.Module):
    """Small PatchGAN: one real/fake logit per ~22 px patch."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ch, 2 * ch, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ch, 4 * ch, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * ch, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)




@torch.no_grad()
def evaluate(model: nn.Module, val_set, device, batch: int = 4) -> dict:
    """Mean PSNR/SSIM of ``model`` on ``[(degraded, sharp, _)]`` (outputs clipped to [0,1])."""
    was_training = model.training
    model.eval()
    ps, ss = [], []
    for i in range(0, len(val_set), batch):
        chunk = val_set[i : i + batch]
        x = torch.from_numpy(np.stack([c[0] for c in chunk])[:, None]).to(device)
        y = model(x).clamp(0, 1).float().cpu().numpy()[:, 0]
        for out, c in zip(y, chunk):
            ps.append(psnr(out, c[1]))
            ss.append(ssim(out, c[1]))
    model.train(was_training)
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def input_metrics(val_set) -> dict:
    return {
        "psnr": float(np.mean([psnr(np.clip(d, 0, 1), s) for d, s, _ in val_set])),
        "ssim": float(np.mean([ssim(np.clip(d, 0, 1), s) for d, s, _ in val_set])),
    }


def _lr_at(cfg: TrainConfig, frac: float, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(max(frac, 0.0), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * frac))


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _set_rng_state(rng: np.random.Generator, s: str) -> None:
    rng.bit_generator.state = json.loads(s)


#: what ``--grow`` can change, per model type (each grows function-preservingly)
GROWABLE = {"gran": ("width", "n_groups"), "sbgran": ("n_groups", "n_half")}


def _grow(model, model_type: str, grow: dict, seed: int):
    """``model`` grown by ``grow`` (``nets.gran.grow_gran`` / ``nets.sbgran.grow_sbgran``)."""
    if model_type not in GROWABLE:
        raise ValueError(f"grow applies to {' and '.join(GROWABLE)} weights, not {model_type}")
    unknown = set(grow) - set(GROWABLE[model_type])
    if unknown:
        raise ValueError(f"grow of a {model_type} takes {' and '.join(GROWABLE[model_type])}, not {sorted(unknown)}")
    if model_type == "gran":
        from ..nets.gran import grow_gran

        return grow_gran(model, seed=seed, **grow)
    from ..nets.sbgran import grow_sbgran

    return grow_sbgran(model, seed=seed, **grow)


def iter_train(cfg: TrainConfig) -> Iterator[Progress | Notice]:
    """Train; yields ``Progress(done=step, total=cfg.steps, stage='train', message=...)``.

    The last message has ``stage='done'`` and the path of ``model_best.pt`` as message.
    """
    cfg.validate()
    if not cfg.data:
        raise ValueError("no training data folders given")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    root = Path(cfg.data_root) if cfg.data_root else None
    under_root = (lambda d: str(root / d)) if root else str  # noqa: E731
    data_dirs = [under_root(d) for d in cfg.data]
    val_dirs = [under_root(d) for d in cfg.val]
    _check_out(out, data_dirs + val_dirs, cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    pixel_loss = PIXEL_LOSSES[cfg.pixel_loss]
    ranges = DegradationRanges.with_overrides(cfg.ranges)
    notes: list[str] = []
    sections, files, groups = load_grouped_sections(data_dirs, notes)
    try:
        sampler = PairSampler(
            sections, crop=cfg.crop, ranges=ranges, augment=Augment() if cfg.augment else None, groups=groups
        )
    except ValueError as e:
        raise ValueError(f"training data {', '.join(data_dirs)}: {e}") from None
    val_set: list[tuple[np.ndarray, np.ndarray, dict]] = []
    val_files: list[Path] = []
    if cfg.val:
        vsec, val_files, vgroups = load_grouped_sections(val_dirs, notes)
        try:
            val_set = make_val_set(
                vsec,
                n=cfg.val_crops,
                crop=min(cfg.val_crop, min(min(s.shape) for s in vsec) - 48),
                seed=cfg.seed + 1 if cfg.val_seed is None else cfg.val_seed,
                ranges=ranges,
                groups=vgroups,
            )
        except ValueError as e:
            raise ValueError(f"validation data {', '.join(val_dirs)}: {e}") from None
    for n in dict.fromkeys(notes):
        yield Notice(f"warning: {n}", "warning")
    base_metrics = input_metrics(val_set) if val_set else None

    init_card = None
    if cfg.init_weights:
        model, init_card = load_model(cfg.init_weights, device="cpu")
        if init_card["model_type"] != cfg.model_type:
            yield Notice(f"init weights are a {init_card['model_type']} model; training that type", "warning")
        model_type, _arch = init_card["model_type"], init_card["architecture"]
        if cfg.grow:
            model = _grow(model, model_type, cfg.grow, cfg.seed)
            model.cfg.to_dict()
            yield Notice(f"grew the init weights to {cfg.grow} (same output before training)")
    elif cfg.grow:
        raise ValueError("grow needs init_weights (a trained GRAN to grow)")
    else:
        model_type = cfg.model_type
        model = build_model(model_type, cfg.model)
        model.cfg.to_dict()
    created = not out.exists()  # the data and the model are good: only now is OUT made
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield from _train(cfg, out, device, rng, model, model_type, pixel_loss, ranges, sampler, val_set,
                          val_files, files, root, base_metrics)
    except Exception:
        if created and not (out / "checkpoint.pt").exists():  # nothing of value: leave no partial run
            shutil.rmtree(out, ignore_errors=True)
        raise


_RUN_FILES = ("checkpoint.pt", "metrics.csv")


def _cut_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.csv`` after ``step`` (atomically): logged after the checkpoint a
    run resumes from, they would be logged twice.
    """
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [ln for ln in lines[1:] if not ln.split(",", 1)[0].isdigit() or int(ln.split(",", 1)[0]) <= step]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep), overwrite=True)


def _check_out(out: Path, inputs: list[str], cfg: TrainConfig) -> None:
    """Refuse an output folder inside a data folder, or holding another run (without resume/overwrite)."""
    o = out.resolve()
    for d in inputs:
        base = Path(d).parent if any(ch in d for ch in "*?[") else Path(d)
        b = base.resolve()
        if b.is_dir() and (o == b or b in o.parents):
            raise ValueError(f"--out {out} lies in the training data folder {base}; choose a folder outside it")
    if o.is_dir() and not (cfg.resume or cfg.overwrite):
        old = [n for n in _RUN_FILES if (o / n).exists()] + sorted(p.name for p in o.glob("model_*.pt"))
        if old:
            raise ValueError(f"--out {out} holds another run ({', '.join(old[:3])}); pass --resume to continue it "
                             "or --overwrite to replace it")


def _train(cfg, out, device, rng, model, model_type, pixel_loss, ranges, sampler, val_set, val_files, files, root,
           base_metrics) -> Iterator[Progress | Notice]:
    model = model.to(device).train()
    semi_blind = model_type == "sbgran"
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    disc = disc_opt = None
    if cfg.adv_weight > 0:
        disc = PatchDiscriminator().to(device).train()
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.99))

    step, elapsed0, best_psnr, last_val = 0, 0.0, -1.0, None
    ckpt_path = out / "checkpoint.pt"
    metrics_path = out / "metrics.csv"
    if cfg.resume and ckpt_path.is_file():
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            if disc is not None and disc_opt is not None and "disc" in ck:
                disc.load_state_dict(ck["disc"])
                disc_opt.load_state_dict(ck["disc_opt"])
            step, elapsed0, best_psnr = int(ck["step"]), float(ck["elapsed"]), float(ck["best_psnr"])
            _set_rng_state(rng, ck["rng"])
            torch.set_rng_state(ck["torch_rng"])
        except Exception as e:  # noqa: BLE001 - truncated, foreign or of another architecture: one line
            raise ValueError(f"{ckpt_path}: not a usable checkpoint of this run ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); to start over, run without --resume and with "
                             "--overwrite") from None
        _cut_metrics(metrics_path, step)  # rows logged after the checkpoint are logged again from it
        yield Notice(f"resumed from {ckpt_path} at step {step}")
    elif cfg.resume and any((out / n).exists() for n in _RUN_FILES[1:]):
        raise ValueError(f"{ckpt_path}: no checkpoint to resume from, but {out} holds a run's metrics; "
                         "to start over, run without --resume and with --overwrite (they are replaced)")
    elif metrics_path.exists():
        metrics_path.unlink()
    new_csv = not metrics_path.exists()
    csv_f = open(metrics_path, "a", newline="")
    writer = csv.writer(csv_f)
    if new_csv:
        writer.writerow(["step", "elapsed_s", "loss", "lr", "val_psnr", "val_ssim"])
        csv_f.flush()

    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def card(metrics: dict | None) -> dict:
        return {
            "description": DESCRIPTIONS.get(model_type, model_type),
            "training": {
                "data": [str(d) for d in cfg.data],
                "data_files": file_manifest(files, root),
                "val": [str(d) for d in cfg.val],
                "val_files": file_manifest(val_files, root) if val_files else [],
                "degradation_ranges": ranges.to_dict(),
                "augmentation": asdict(Augment()) if cfg.augment else None,
                "steps": step,
                "elapsed_minutes": round((elapsed0 + time.monotonic() - t0) / 60.0, 2),
                "config": cfg.to_dict(),
                "loss": cfg.pixel_loss.upper() + (f" + {cfg.adv_weight} x LSGAN patch adversarial" if cfg.adv_weight > 0 else ""),
                "init_weights": cfg.init_weights,
                "torch": torch.__version__,
                "device": str(device),
            },
            "validation": {
                **({"psnr": metrics["psnr"], "ssim": metrics["ssim"]} if metrics else {}),
                "input_psnr": base_metrics["psnr"] if base_metrics else None,
                "input_ssim": base_metrics["ssim"] if base_metrics else None,
                "n_crops": len(val_set),
                "crop": int(val_set[0][0].shape[0]) if val_set else None,
                "note": "synthetic degradations drawn from the training ranges (seeded) on held-out sections",
            },
        }

    def checkpoint(final: bool = False) -> Iterator[Notice]:
        nonlocal best_psnr, last_val
        metrics = evaluate(model, val_set, device) if val_set else None
        last_val = metrics
        writer.writerow([step, round(elapsed0 + time.monotonic() - t0, 1), "", "", *(
            (f"{metrics['psnr']:.4f}", f"{metrics['ssim']:.5f}") if metrics else ("", ""))])
        csv_f.flush()
        c = card(metrics)
        save_model(model, out / "model_latest.pt", c)
        if metrics is None or metrics["psnr"] > best_psnr:
            best_psnr = metrics["psnr"] if metrics else best_psnr
            save_model(model, out / "model_best.pt", c)
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "elapsed": elapsed0 + time.monotonic() - t0,
            "best_psnr": best_psnr,
            "rng": _rng_state(rng),
            "torch_rng": torch.get_rng_state(),
        }
        if disc is not None and disc_opt is not None:
            state["disc"], state["disc_opt"] = disc.state_dict(), disc_opt.state_dict()
        atomic_torch_save(state, ckpt_path)
        if metrics:
            yield Notice(
                f"step {step}: val PSNR {metrics['psnr']:.2f} dB SSIM {metrics['ssim']:.4f} "
                f"(input {base_metrics['psnr']:.2f} dB / {base_metrics['ssim']:.4f})"
            )

    t0 = time.monotonic()
    budget = max(float(cfg.max_minutes), 0.0) * 60.0 if cfg.max_minutes is not None else None
    running = 0.0
    n_run = 0
    try:
        while step < cfg.steps:
            elapsed = elapsed0 + time.monotonic() - t0
            if budget is not None and elapsed >= budget:
                yield Notice(f"time budget of {cfg.max_minutes} min reached at step {step}")
                break
            frac = max(step / cfg.steps, elapsed / budget if budget else 0.0)  # budget > 0 here
            lr = _lr_at(cfg, frac, step)
            for g in opt.param_groups:
                g["lr"] = lr
            if semi_blind:  # PSF estimated on the crop with its context, as in tiled inference
                deg, sharp, ctx = sampler.batch_context(rng, cfg.batch)
                params = torch.from_numpy(estimate_params(ctx)).to(device)
            else:
                deg, sharp = sampler.batch(rng, cfg.batch)
                params = None
            x = torch.from_numpy(deg).to(device)
            y = torch.from_numpy(sharp).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                pred = model(x) if params is None else model(x, params)
                loss = pixel_loss(pred.float(), y)
                if disc is not None:
                    adv = torch.mean((disc(pred.float()) - 1.0) ** 2)
                    total = loss + cfg.adv_weight * adv
                else:
                    total = loss
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            if disc is not None and disc_opt is not None:
                for g in disc_opt.param_groups:
                    g["lr"] = lr
                d_loss = 0.5 * (
                    torch.mean((disc(y) - 1.0) ** 2) + torch.mean(disc(pred.detach().float()) ** 2)
                )
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_opt.step()
            step += 1
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise ValueError(f"training diverged at step {step} (loss {lv}): lower --lr, or resume from "
                                 f"the last checkpoint in {out}")
            running += lv
            n_run += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                el = elapsed0 + time.monotonic() - t0
                avg = running / n_run
                writer.writerow([step, round(el, 1), f"{avg:.6f}", f"{lr:.3e}", "", ""])
                csv_f.flush()
                running, n_run = 0.0, 0
                rate = step / max(el, 1e-9)
                left = (cfg.steps - step) / max(rate, 1e-9)
                if budget is not None:
                    left = min(left, max(budget - el, 0.0))
                yield Progress(step, cfg.steps, "train", f"loss {avg:.4f} lr {lr:.2e}", eta_s=left)
            if step in cfg.snapshot_steps:
                save_model(model, out / f"model_step{step}.pt", card(None))
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                yield from checkpoint()
        yield from checkpoint(final=True)
    finally:
        csv_f.close()
    msg = str(out / "model_best.pt")
    yield Progress(step, cfg.steps, "done", msg, eta_s=0.0)


def train(cfg: TrainConfig) -> dict:
    """Run ``iter_train`` to the end; returns ``{'steps', 'best', 'latest', 'losses'}``."""
    losses: list[float] = []
    last = None
    for msg in iter_train(cfg):
        if isinstance(msg, Progress) and msg.stage == "train" and msg.message.startswith("loss "):
            losses.append(float(msg.message.split()[1]))
        last = msg
    out = Path(cfg.out)
    return {
        "steps": last.done if isinstance(last, Progress) else None,
        "best": out / "model_best.pt",
        "latest": out / "model_latest.pt",
        "losses": losses,
    }
