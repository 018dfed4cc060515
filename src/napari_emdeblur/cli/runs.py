"""What ``emdeblur watch`` and ``emdeblur batch`` share: their options and how a run is printed."""

from __future__ import annotations

import argparse
import signal
import sys
import time

EXIT_TILES_FAILED = 3

__all__ = ["EXIT_TILES_FAILED", "add_pipeline_args", "config_from_args", "print_run"]


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``watch`` and ``batch``."""
    from ..deblur.service import PRECISION_NAMES
    from ..qc.blurmap import DEFAULT_WINDOW
    from ..qc.focus import METRICS
    from ..qc.tiling import DEFAULT_TILE
    from .options import device_arg, finite_float, int_range, value_range_arg, window_arg

    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (journal, reports, corrected tiles)")
    p.add_argument("--tile", type=int_range(8, unit="px"), default=DEFAULT_TILE, help=f"QC subtile size in px (default {DEFAULT_TILE})")
    p.add_argument("--metric", default=None, choices=list(METRICS), help="focus metric (default: the package default, blur)")
    p.add_argument("--correct-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: correct tiles with more than PX px of excess blur (default 1)")
    p.add_argument("--retake-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: tiles with more than PX px of excess blur are flagged for re-imaging, "
                   "not corrected (default 3)")
    p.add_argument("--window", type=window_arg, default=DEFAULT_WINDOW, metavar="128|160|full",
                   help=f"blur metric: analyse the centred 128 or 160 px of each subtile, or full subtiles "
                   f"(default {DEFAULT_WINDOW or 'full'})")
    p.add_argument("--correct-threshold", type=finite_float(), default=None, metavar="T",
                   help="tiles scoring below T are corrected (a score; default: the metric's fixed default)")
    p.add_argument("--retake-threshold", type=finite_float(), default=None, metavar="T",
                   help="tiles scoring below T are flagged for re-imaging, not corrected (a score)")
    p.add_argument("--calibrate", type=int_range(0), default=0, metavar="N",
                   help="set both thresholds from the subtile scores of the first N tiles instead")
    p.add_argument("--weights", default=None, metavar="PATH", help="GRAN weights (.pt with its .json card)")
    p.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_NAMES)
    p.add_argument("--value-range", type=value_range_arg, default="auto", metavar="auto|dtype|LO,HI",
                   help="how tile values map onto the model's [0, 1]: auto (uint16 by its significant bit "
                        "depth, per tile), dtype (/65535) or a fixed LO,HI for the whole run")
    p.add_argument("--no-correct", action="store_true", help="score and decide only, write no corrected tiles")
    p.add_argument("--threads", type=int_range(0), default=0, metavar="N",
                   help="tiles processed in parallel by this process, each on one thread for reading, "
                   "scoring and GRAN (default 0: one per CPU core, at most 8; batch workers use 1)")
    p.add_argument("--no-hash", action="store_true",
                   help="do not record the sha256 of each input (saves ~0.6 ms of CPU per MB)")
    p.add_argument("--stable-seconds", type=finite_float(0.0), default=2.0, metavar="S",
                   help="a tile without marker is complete once unchanged for S seconds (default 2)")
    p.add_argument("--max-failures", type=int_range(0), default=3, metavar="N",
                   help="retries of a bad (corrupt) tile, each only after the file changed (default 3)")
    p.add_argument("--report-interval", type=finite_float(0.0), default=5.0, metavar="S",
                   help="regenerate reports at most every S seconds while running (default 5)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only notices and the summary")


def config_from_args(args):
    """The :class:`~napari_emdeblur.pipeline.config.PipelineConfig` of parsed watch/batch options."""
    from ..pipeline.config import PipelineConfig

    return PipelineConfig(
        tile=args.tile,
        metric=args.metric,
        correct_threshold=args.correct_threshold,
        retake_threshold=args.retake_threshold,
        calibrate=args.calibrate,
        weights=args.weights,
        device=args.device,
        correct=not args.no_correct,
        precision=args.precision,
        value_range=args.value_range,
        threads=args.threads,
        stable_seconds=args.stable_seconds,
        max_failures=args.max_failures,
        report_interval=args.report_interval,
        hash_inputs=not getattr(args, "no_hash", False),
        correct_px=args.correct_px,
        retake_px=args.retake_px,
        window=args.window,
    )


def print_run(gen, quiet: bool = False, prefix: str = "") -> int:
    """Print a pipeline generator's messages; return the exit code."""
    from ..pipeline.errors import ModelLoadError
    from ..pipeline.session import RunSummary
    from ..qc.messages import Notice, Progress

    def _term(signum, frame):  # SIGTERM -> the same clean stop as Ctrl-C
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    summary = None
    try:
        for msg in gen:
            if isinstance(msg, Progress):
                if not quiet:
                    print(f"{prefix}[{msg.done}/{msg.total}] {msg.message}", flush=True)
            elif isinstance(msg, Notice):
                stream = sys.stderr if msg.level == "warning" else sys.stdout
                print(f"{prefix}{msg.message}", file=stream, flush=True)
            elif isinstance(msg, RunSummary):
                summary = msg
                print(f"{prefix}{time.strftime('%H:%M:%S')} {msg.line()}", flush=True)
    except ModelLoadError as e:  # a usage problem (weights/device), not a bug: one line, exit 1
        raise ValueError(str(e)) from e
    finally:
        signal.signal(signal.SIGTERM, old)
    if summary is not None and summary.failed:
        return EXIT_TILES_FAILED
    return 0
