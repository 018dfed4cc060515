"""``emdeblur batch INPUTS... --out OUTDIR``: process finished acquisitions on a Dask cluster."""

from __future__ import annotations

from .options import int_range
from .runs import add_pipeline_args, config_from_args, print_run


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "batch",
        help="process tiles/folders on a Dask cluster (same journal and reports as watch)",
        description="Score, decide and correct every tile of INPUTS (files or folders) with "
        "dask.distributed: a LocalCluster of --workers processes, or the scheduler at --scheduler. "
        "Re-running skips what is done. Exit code 3 if tiles failed in this run.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tiles or folders")
    add_pipeline_args(p)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="existing scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int_range(0), default=None, metavar="N",
                   help="LocalCluster worker processes (default: CPU count; 0 = serial, no Dask)")
    p.add_argument("--gpu-workers", action="store_true",
                   help="run corrections as tasks needing the worker resource GPU=1")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline.batch import batch

    cfg = config_from_args(args)
    gen = batch(args.inputs, args.out, cfg, scheduler=args.scheduler, workers=args.workers,
                gpu_workers=args.gpu_workers)
    return print_run(gen, quiet=args.quiet)
