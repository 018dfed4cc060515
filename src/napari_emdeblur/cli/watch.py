"""``emdeblur watch DIR --out OUTDIR``: process an acquisition folder as tiles arrive."""

from __future__ import annotations

from .options import finite_float
from .runs import add_pipeline_args, config_from_args, print_run


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "watch",
        help="process tiles as they are written into a folder (exactly once, crash-safe)",
        description="Poll DIR recursively for complete tiles (tif/tiff/png/bmp; MultiSEM section "
        "folders with full_image_coordinates.txt), score, decide and correct each exactly once, "
        "and keep per-section reports in OUTDIR. Exit code 3 if tiles failed in this run.",
    )
    p.add_argument("dir", metavar="DIR", help="acquisition folder to watch")
    add_pipeline_args(p)
    p.add_argument("--once", action="store_true", help="process what is there (waiting for files being written), then exit")
    p.add_argument("--poll", type=finite_float(0.0, lo_open=True), default=2.0, metavar="S", help="seconds between scans (default 2)")
    p.add_argument("--max-seconds", type=finite_float(0.0), default=None, metavar="S", help="stop after S seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline.watch import watch

    cfg = config_from_args(args)
    gen = watch(args.dir, args.out, cfg, once=args.once, poll=args.poll, max_seconds=args.max_seconds)
    return print_run(gen, quiet=args.quiet)
