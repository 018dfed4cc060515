"""``emdeblur correct``: deblur an EM image or stack with GRAN, all tiles or only soft ones.

``--tiles flagged`` (default) scores every ``--tile-size`` QC tile with the focus metric and
classifies it like ``emdeblur score`` and the napari widget (``core.decisions.classify``):
tiles scoring below ``--threshold`` but not below ``--retake-threshold`` are corrected; tiles
below the retake threshold are too blurred to correct, left untouched and only counted as
"to retake". Both thresholds default to automatic, per section
(``core.scoring.section_thresholds``). Every pixel not corrected is copied byte for byte.
``--tiles all`` corrects the whole image with blended overlapping windows. The output has the
input's shape and dtype, is written atomically, never over the input, and an existing output
is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "correct",
        help="deblur an image or stack (all tiles, or only those flagged soft)",
        description="Deblur an EM section or stack with GRAN. Output: same shape and dtype.",
    )
    p.add_argument("input", help="image file, stack or folder readable by emdeblur")
    p.add_argument("-o", "--output", required=True, help="output .tif / .ome.tif / .zarr")
    p.add_argument("--tiles", choices=("all", "flagged"), default="flagged",
                   help="correct every pixel, or only QC tiles scoring below the threshold (default)")
    p.add_argument("--threshold", default="auto",
                   help="tiles scoring below this are corrected, with --tiles flagged "
                        "(number or 'auto', per section)")
    p.add_argument("--retake-threshold", default="auto",
                   help="tiles scoring below this are too blurred to correct: left untouched and "
                        "reported as to retake (number or 'auto', per section)")
    p.add_argument("--metric", default=None, help="focus metric (default: the package default)")
    p.add_argument("--tile-size", type=int, default=256, help="QC tile size in px (default 256)")
    p.add_argument("--weights", default=None, help="weights .pt (default: the shipped GRAN)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--infer-tile", type=int, default=512, help="inference window size (px)")
    p.add_argument("--overlap", type=int, default=32, help="window overlap / context margin (px)")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--value-range", default="auto", metavar="auto|dtype|LO,HI",
                   help="how values map onto the model's [0, 1]: auto (uint16 by its significant bit "
                        "depth, default), dtype (/65535) or an explicit LO,HI")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
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
    import numpy as np

    from .cli import CLIError
    from .core import decisions as dec
    from .core.focus import DEFAULT_METRIC, score_tiles
    from .core.io import load_section, save_image
    from .core.progress import Notice, TileResult, drain
    from .core.scoring import ScoreParams, section_thresholds
    from .core.tiling import TileGrid

    src = Path(args.input).expanduser()
    out = Path(args.output).expanduser()
    if not src.exists():
        raise CLIError(f"{src}: no such file or folder", 1)
    t0 = time.monotonic()
    try:
        same = out.resolve() == src.resolve() or (out.exists() and out.samefile(src))
    except OSError:
        same = False
    if same:
        raise CLIError(f"{out}: refusing to write over the input", 2)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out}: already exists (pass --overwrite to replace it)", 2)
    if not out.parent.is_dir():
        raise CLIError(f"{out.parent}: output folder does not exist", 2)
    if args.tile_size < 16:
        raise CLIError("--tile-size must be at least 16 px", 2)
    metric = args.metric or DEFAULT_METRIC
    score_params = ScoreParams(
        tile=args.tile_size,
        metric=metric,
        correct_threshold=_threshold(args.threshold),
        retake_threshold=_threshold(args.retake_threshold, "--retake-threshold"),
    )
    score_params.validate()  # unknown metric, retake > correct: ValueError -> one-line message

    from .model.infer import InferenceParams, iter_correct_image, iter_correct_tiles, resolve_device
    from .model.weights import load_model, shipped_weights_path
    from .core.values import fixed_range

    params = InferenceParams(tile=args.infer_tile, overlap=args.overlap, batch=args.batch,
                             device=args.device, precision=args.precision, value_range=args.value_range)
    params.validate()  # a bad --value-range: ValueError -> one-line message
    device = resolve_device(args.device)
    model, card = load_model(args.weights, device=str(device))

    sec_in = load_section(str(src))
    data, pixel_size = sec_in.data, sec_in.pixel_size
    if data.ndim not in (2, 3):
        raise CLIError(f"{src}: expected a 2-D section or (z, y, x) stack, got shape {tuple(data.shape)}", 1)
    stack = data.ndim == 3
    nz = data.shape[0] if stack else 1
    params.value_range = fixed_range(data, params.value_range)  # one (lo, hi) for an in-memory stack
    result = np.empty(tuple(data.shape), np.dtype(data.dtype))

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    n_corr = n_tiles = n_retake = 0
    thresholds: list[float] = []
    retake_thresholds: list[float] = []
    for z in range(nz):
        sec = np.asarray(data[z] if stack else data)
        target = result[z] if stack else result
        target[...] = sec
        grid = TileGrid(sec.shape, args.tile_size)
        if args.tiles == "all":
            target[...] = drain(
                iter_correct_image(sec, model, params),
                lambda msg: say(msg.message) if isinstance(msg, Notice) else None,
            )
            n_corr += grid.n_tiles
            n_tiles += grid.n_tiles
            say(f"section {z + 1}/{nz}: corrected all {grid.n_tiles} tiles")
            continue
        scores = np.asarray(score_tiles(sec, args.tile_size, metric), np.float64)
        c, r = section_thresholds(scores, score_params)  # NaN when no tile has a finite score
        thresholds.append(c)
        retake_thresholds.append(r)
        if np.isfinite(c) and np.isfinite(r):
            decisions = dec.classify(scores, c, r)
        else:  # nothing scored: nothing to flag
            decisions = np.full(scores.shape, dec.OK, np.int8)
        boxes = [grid.bounds(int(i), int(j)) for i, j in np.argwhere(decisions == dec.CORRECT)]
        nr = int(np.count_nonzero(decisions == dec.RETAKE))
        n_retake += nr
        n_tiles += grid.n_tiles
        for msg in iter_correct_tiles(sec, model, boxes, params, z=z, grid_tile=args.tile_size):
            if isinstance(msg, TileResult):
                h, w = msg.data.shape
                target[msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
                n_corr += 1
            elif isinstance(msg, Notice):
                say(msg.message)
        say(f"section {z + 1}/{nz}: {len(boxes)}/{grid.n_tiles} tiles corrected ({metric} < {c:.4g}), "
            f"{nr} too blurred to correct, to retake ({metric} < {r:.4g})")

    meta = {
        "emdeblur": {
            "command": "correct",
            "input": str(src),
            "tiles": args.tiles,
            "tile_size": args.tile_size,
            "thresholds": thresholds,
            "retake_thresholds": retake_thresholds,
            "tiles_corrected": n_corr,
            "tiles_to_retake": n_retake,
            "weights": str(args.weights or shipped_weights_path()),
            "weights_sha256": card.get("weights_sha256"),
            "model_type": card.get("model_type"),
            "value_range": list(params.value_range) if isinstance(params.value_range, tuple)
            else params.value_range,
        }
    }
    written = save_image(out, result, pixel_size, metadata=meta, overwrite=args.overwrite, protect=[str(src)])
    retake = f", {n_retake} to retake" if args.tiles == "flagged" else ""
    say(f"wrote {written} ({n_corr}/{n_tiles} tiles corrected{retake}, {time.monotonic() - t0:.1f} s)")
    return 0
