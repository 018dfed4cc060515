"""``emdeblur correct``: deblur an EM image or stack with GRAN, all tiles or only soft ones.

``--tiles flagged`` (default) scores every ``--tile-size`` QC tile with the focus metric and
classifies it like ``emdeblur score`` and the napari widget (``qc.scoring``, ``qc.decisions``):
tiles scoring below ``--threshold`` but not below ``--retake-threshold`` are corrected; tiles
below the retake threshold are too blurred to correct, left untouched and only counted as
"to retake". With the default metric, ``blur``, the thresholds are px of excess blur
(``--correct-px`` / ``--retake-px``, default 1 and 3 px); for the other metrics both default to
automatic, per section (``qc.thresholds``). Tiles without tissue signal (``empty``) are never
corrected, whatever ``--tiles`` says. Every pixel not corrected is copied byte for byte. ``--tiles all`` corrects the whole image with blended
overlapping windows. The correction is the correction service's (``deblur.service``, the same as
the napari widget and the pipeline), fidelity check included: ``<output>_report.csv`` and
``.json`` beside the output hold one row per corrected QC tile (focus before/after, estimated
blur, fidelity ratio, "check by eye"). The output has the input's shape and dtype, is written
atomically, never over the input, and existing outputs are only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..deblur.service import DEFAULT_OVERLAP, PRECISION_NAMES
    from ..qc.focus import METRICS
    from ..qc.tiling import DEFAULT_TILE
    from .options import device_arg, finite_float, int_range, threshold_or_auto, value_range_arg

    p = subparsers.add_parser(
        "correct",
        help="deblur an image or stack (all tiles, or only those flagged soft)",
        description="Deblur an EM section or stack with GRAN. Output: same shape and dtype.",
    )
    p.add_argument("input", help="image file, stack or folder readable by emdeblur")
    p.add_argument("-o", "--output", required=True, help="output .tif / .ome.tif / .zarr")
    p.add_argument("--tiles", choices=("all", "flagged"), default="flagged",
                   help="correct every pixel, or only QC tiles scoring below the threshold (default)")
    p.add_argument("--threshold", type=threshold_or_auto, default="auto",
                   help="tiles scoring below this are corrected, with --tiles flagged "
                        "(number or 'auto', per section)")
    p.add_argument("--retake-threshold", type=threshold_or_auto, default="auto",
                   help="tiles scoring below this are too blurred to correct: left untouched and "
                        "reported as to retake (number or 'auto', per section)")
    p.add_argument("--correct-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: correct tiles with more than PX px of excess blur (default 1)")
    p.add_argument("--retake-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: tiles with more than PX px of excess blur are left untouched, to retake "
                        "(default 3)")
    p.add_argument("--metric", default=None, choices=list(METRICS), help="focus metric (default: the package default)")
    p.add_argument("--tile-size", type=int_range(16, unit="px"), default=DEFAULT_TILE, help=f"QC tile size in px (default {DEFAULT_TILE})")
    p.add_argument("--weights", default=None, help="weights .pt (default: the shipped GRAN)")
    p.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_NAMES)
    p.add_argument("--infer-tile", type=int_range(64, unit="px"), default=512,  # deblur.infer.MIN_TILE
                   help="largest inference window (px; windows shrink to cover the image with as few as this size needs)")
    p.add_argument("--overlap", type=int_range(0, unit="px"), default=DEFAULT_OVERLAP,
                   help=f"window overlap / context margin (px, default {DEFAULT_OVERLAP})")
    p.add_argument("--batch", type=int_range(1), default=4, help="windows per forward pass")
    p.add_argument("--value-range", type=value_range_arg, default="auto", metavar="auto|dtype|LO,HI",
                   help="how values map onto the model's [0, 1]: auto (uint16 by its significant bit "
                        "depth, default), dtype (/65535) or an explicit LO,HI")
    p.add_argument("--ensemble", action="store_true",
                   help="quality mode: average the model over the 8 flips/rotations of each window (8x slower)")
    p.add_argument("--no-gate", action="store_true",
                   help="let the model change every window (the do-no-harm gate off; by default a sharp "
                        "window, or one blurred beyond the model's trained range, comes out unchanged)")
    p.add_argument("--no-fidelity", action="store_true",
                   help="skip the per-tile blur estimate and fidelity check (faster; the report then lacks them)")
    p.add_argument("--no-report", action="store_true", help="do not write OUTPUT_report.csv / .json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT (and its reports)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _threshold(arg: str, option: str = "--threshold") -> float | None:
    if str(arg).lower() == "auto":
        return None
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"{option} must be a number or 'auto', got {arg!r}") from None


def run(args) -> int:
    """Correct ``args.input`` into ``args.output`` (see the module docstring)."""
    import numpy as np

    from ..deblur.cache import get_model
    from ..deblur.reports import CorrectionReport, report_paths, write_reports
    from ..deblur.selection import Selection
    from ..deblur.service import CorrectionParams, iter_correct
    from ..io.errors import user_message
    from ..io.formats import WRITE_SUFFIXES, is_writable_name, suffix_of
    from ..io.read import load_section
    from ..io.write import input_conflict, not_a_folder, save_image
    from ..qc import decisions as dec
    from ..qc.focus import DEFAULT_METRIC
    from ..qc.messages import Notice, SectionScores, TileResult
    from ..qc.scoring import ScoreParams, iter_score_stack
    from ..qc.thresholds import px_from_score
    from ..qc.tiling import TileGrid
    from . import CLIError, report_warnings

    src = Path(args.input).expanduser()
    out = Path(args.output).expanduser()
    if not src.exists():
        raise CLIError(f"{src}: no such file or folder", 1)
    t0 = time.monotonic()
    targets = [out] + ([] if args.no_report else list(report_paths(out)))
    for t in targets:  # never over the input, a tile or a stack member, nor into an input folder
        clash = input_conflict(t, [src])
        if clash:
            raise CLIError(clash, 2)
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise CLIError(f"{existing[0]}: already exists (pass --overwrite to replace it)", 2)
    if not out.parent.is_dir():
        raise CLIError(f"{out}: its folder {out.parent} {not_a_folder(out.parent)}", 2)
    if not args.overlap < args.infer_tile // 2:
        raise CLIError(f"argument --overlap: must be less than half of --infer-tile ({args.infer_tile}), "
                       f"got {args.overlap}", 2)
    metric = args.metric or DEFAULT_METRIC
    score_params = ScoreParams(
        tile=args.tile_size,
        metric=metric,
        correct_threshold=_threshold(args.threshold),
        retake_threshold=_threshold(args.retake_threshold, "--retake-threshold"),
        correct_px=args.correct_px,
        retake_px=args.retake_px,
    )
    score_params.validate()  # unknown metric, retake > correct: ValueError -> one-line message
    params = CorrectionParams(
        weights=args.weights, device=args.device, precision=args.precision, tile=args.infer_tile,
        overlap=args.overlap, batch=args.batch, qc_tile=args.tile_size, metric=metric,
        fidelity=not args.no_fidelity, value_range=args.value_range, ensemble=args.ensemble,
        keep_sharp=not args.no_gate,
    )
    params.validate()  # a bad --value-range: ValueError -> one-line message
    # everything that can be known before the (long) work: where it goes, and the model on its device
    if not is_writable_name(out):
        raise CLIError(f"{out}: unsupported output type {suffix_of(out) or '(none)'}; use "
                       f"{', '.join(WRITE_SUFFIXES)}", 2)
    if not os.access(out.parent, os.W_OK):
        raise CLIError(f"{out}: cannot write into {out.parent} (permission denied or a read-only file system)", 1)
    try:
        get_model(params.weights, params.device)  # the service takes it from the cache
    except (ValueError, OSError) as e:
        raise CLIError(user_message(e), 1) from None

    sec_in = load_section(str(src))
    report_warnings(sec_in)
    data, pixel_size = sec_in.data, sec_in.pixel_size
    if data.ndim not in (2, 3):
        raise CLIError(f"{src}: expected a 2-D section or (z, y, x) stack, got shape {tuple(data.shape)}", 1)
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    thresholds: list[float] = []
    retake_thresholds: list[float] = []
    n_retake = 0
    if args.tiles == "all":
        selection = Selection.whole_image()
    else:
        decisions = []
        for msg in iter_score_stack(data, score_params):
            if isinstance(msg, SectionScores):
                thresholds.append(msg.extras["correct_threshold"])
                retake_thresholds.append(msg.extras["retake_threshold"])
                decisions.append(msg.extras["decisions"])
                nr = int(np.count_nonzero(msg.extras["decisions"] == dec.RETAKE))
                n_retake += nr
                nc = int(np.count_nonzero(msg.extras["decisions"] == dec.CORRECT))
                if score_params.has_blurmap:  # thresholds as the user gives them: px of excess blur
                    crit = (f"excess blur > {float(px_from_score(thresholds[-1])):.3g} px",
                            f"> {float(px_from_score(retake_thresholds[-1])):.3g} px")
                else:
                    crit = (f"{metric} < {thresholds[-1]:.4g}", f"{metric} < {retake_thresholds[-1]:.4g}")
                say(f"section {msg.z + 1}: {nc}/{msg.scores.size} tiles to correct ({crit[0]}), "
                    f"{nr} too blurred to correct, to retake ({crit[1]})")
        selection = Selection.flagged(np.stack(decisions))
    result = np.array(data, copy=True)
    report = CorrectionReport()
    for msg in iter_correct(data, selection, params):
        if isinstance(msg, TileResult):
            h, w = msg.data.shape
            (result[msg.z] if result.ndim == 3 else result)[msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
        elif isinstance(msg, Notice):
            say(msg.message)
        elif isinstance(msg, CorrectionReport):
            report = msg
    meta = {
        "emdeblur": {
            "command": "correct",
            "input": str(src),
            "tiles": args.tiles,
            "tile_size": args.tile_size,
            "thresholds": thresholds,
            "retake_thresholds": retake_thresholds,
            "tiles_corrected": len(report.tiles),
            "tiles_to_retake": n_retake,
            "tiles_to_check_by_eye": sum(r.check_by_eye for r in report.tiles),
            **{k: report.meta.get(k) for k in ("weights", "weights_sha256", "model_type", "value_range")},
        }
    }
    protect = [str(src)] + [t.path for t in sec_in.tiles or []] + list(sec_in.metadata.get("files") or [])
    written = save_image(out, result, pixel_size, metadata=meta, overwrite=args.overwrite, protect=protect)
    if not args.no_report:
        write_reports(out, report.tiles, dict(report.meta, **meta["emdeblur"]), overwrite=args.overwrite)
    retake = f", {n_retake} to retake" if args.tiles == "flagged" else ""
    check = sum(r.check_by_eye for r in report.tiles)
    n_tiles = (data.shape[0] if data.ndim == 3 else 1) * TileGrid(tuple(data.shape[-2:]), args.tile_size).n_tiles
    say(f"wrote {written} ({len(report.tiles)}/{n_tiles} tiles corrected{retake}, {check} to check by eye, "
        f"{time.monotonic() - t0:.1f} s)")
    return 0
