"""``emdeblur train``: train (or fine-tune) a GRAN / U-Net deblurring model on sharp EM images."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..deblur.cards import MODEL_TYPE_NAMES
    from .options import finite_float, int_range, json_object

    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a deblurring model on folders of sharp EM images",
        description="Train GRAN (or the U-Net baseline) on sharp EM tiles degraded on the fly "
        "with the EM defocus model; writes checkpoints, model cards and metrics.csv into --out.",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="folders of sharp images (png/tif)")
    p.add_argument("--val", nargs="*", default=[], metavar="DIR", help="held-out folders for validation")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, cards, metrics.csv)")
    p.add_argument("--model-type", choices=MODEL_TYPE_NAMES, default="gran")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="--data/--val entries are relative to DIR (the model card records them so)")
    p.add_argument("--ranges", type=json_object, default=None, metavar="JSON",
                   help='degradation range overrides, e.g. \'{"sharp_prob": 0.15}\'')
    p.add_argument("--snapshot-steps", type=int_range(1), nargs="*", default=[], metavar="N",
                   help="also keep the weights at these steps (model_step<N>.pt), e.g. for equal-budget comparisons")
    p.add_argument("--arch", type=json_object, default=None, metavar="JSON", help='architecture overrides, e.g. \'{"width": 32}\'')
    p.add_argument("--steps", type=int_range(1), default=20000)
    p.add_argument("--max-minutes", type=finite_float(0.0), default=None, help="stop after this much wall time")
    p.add_argument("--batch", type=int_range(1), default=8)
    p.add_argument("--crop", type=int_range(16, unit="px"), default=128)
    p.add_argument("--lr", type=finite_float(0.0, lo_open=True), default=5e-4)
    p.add_argument("--loss", choices=("l1", "mse"), default="l1", help="pixel loss (mse optimises PSNR)")
    p.add_argument("--adv-weight", type=finite_float(0.0), default=0.0, help="patch-discriminator loss weight (0 = L1 only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-seed", type=int, default=None, help="seed of the validation crops (default: seed + 1)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a previous run in OUT")
    p.add_argument("--init-weights", default=None, metavar="PATH", help="fine-tune from these weights")
    p.add_argument("--grow", type=json_object, default=None, metavar="JSON",
                   help='with --init-weights: grow that model first (same output at step 0): a GRAN\'s '
                        '"width" / "n_groups", a semi-blind GRAN\'s "n_groups" / "n_half", e.g. \'{"n_groups": 3}\'')
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--threads", type=int_range(1), default=None, help="torch CPU threads")
    p.add_argument("--log-every", type=int_range(1), default=50)
    p.add_argument("--checkpoint-every", type=int_range(1), default=500)
    p.add_argument("--val-crops", type=int_range(1), default=16)
    p.add_argument("--no-augment", action="store_true", help="no contrast/geometric augmentation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..deblur.train.degrade import DegradationRanges
    from ..deblur.train.loop import TrainConfig, iter_train
    from ..deblur.weights import checked_config
    from ..qc.messages import Notice, Progress
    from . import CLIError

    arch = args.arch or {}
    if not args.init_weights:
        checked_config(args.model_type, arch, source="argument --arch")  # WeightsError names the option
    try:
        DegradationRanges.with_overrides(args.ranges)
    except ValueError as e:
        raise CLIError(f"argument --ranges: {e}") from None
    cfg = TrainConfig(
        data=list(args.data),
        val=list(args.val or []),
        out=args.out,
        model_type=args.model_type,
        model=arch,
        crop=args.crop,
        batch=args.batch,
        steps=args.steps,
        max_minutes=args.max_minutes,
        lr=args.lr,
        adv_weight=args.adv_weight,
        pixel_loss=args.loss,
        val_seed=args.val_seed,
        grow=args.grow or {},
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        init_weights=args.init_weights,
        device=args.device,
        amp=args.amp,
        threads=args.threads,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        val_crops=args.val_crops,
        augment=not args.no_augment,
        data_root=args.data_root,
        ranges=args.ranges or {},
        snapshot_steps=list(args.snapshot_steps or []),
    )
    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            bar = None
    t0 = time.monotonic()
    last = None
    for msg in iter_train(cfg):
        if isinstance(msg, Notice):
            (bar.write if bar else lambda s: print(s, file=sys.stderr, flush=True))(msg.message)
        elif isinstance(msg, Progress):
            last = msg
            if bar is not None:
                bar.n = msg.done
                bar.set_postfix_str(msg.message, refresh=False)
                bar.refresh()
            elif not args.quiet:
                print(f"[{time.monotonic() - t0:7.0f}s] step {msg.done}/{msg.total} {msg.message}", file=sys.stderr, flush=True)
    if bar is not None:
        bar.close()
    if last is not None and last.stage == "done":
        print(f"best weights: {last.message}")
    return 0
