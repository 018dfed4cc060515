"""``emdeblur correct``: deblur an EM image or stack with GRAN, all tiles or only soft ones.

``--tiles flagged`` (default) scores every ``--tile-size`` QC tile with the focus metric and
corrects the tiles scoring below ``--threshold`` (default: the automatic per-section threshold
of ``core.decisions.auto_thresholds``); every other pixel is copied byte for byte.
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
                   help="focus-score threshold for --tiles flagged (number or 'auto', per section)")
    p.add_argument("--metric", default=None, help="focus metric (default: the package default)")
    p.add_argument("--tile-size", type=int, default=256, help="QC tile size in px (default 256)")
    p.add_argument("--weights", default=None, help="weights .pt (default: the shipped GRAN)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--infer-tile", type=int, default=512, help="inference window size (px)")
    p.add_argument("--overlap", type=int, default=32, help="window overlap / context margin (px)")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _threshold(arg: str) -> float | None:
    if str(arg).lower() == "auto":
        return None
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"--threshold must be a number or 'auto', got {arg!r}") from None


def _load(path: str):
    """(data, pixel_size) through core.io when available, else tifffile."""
    try:
        from .core.io import load_section
    except ImportError:  # pragma: no cover - core.io is part of the package
        import tifffile

        return tifffile.imread(path), None
    sec = load_section(path)
    return sec.data, sec.pixel_size


def _save(path: Path, data, pixel_size, meta: dict, overwrite: bool, src: str) -> Path:
    try:
        from .core.io import save_image
    except ImportError:  # pragma: no cover
        import os
        import tempfile

        import tifffile

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            tifffile.imwrite(tmp, data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
    return save_image(path, data, pixel_size, metadata=meta, overwrite=overwrite, protect=[src])


def run(args) -> int:
    import numpy as np

    from .cli import CLIError
    from .core.progress import Notice, TileResult
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
    thr = _threshold(args.threshold)

    from .model.infer import InferenceParams, iter_correct_image, iter_correct_tiles, resolve_device
    from .model.weights import load_model, shipped_weights_path

    params = InferenceParams(tile=args.infer_tile, overlap=args.overlap, batch=args.batch,
                             device=args.device, precision=args.precision)
    params.validate()
    device = resolve_device(args.device)
    model, card = load_model(args.weights, device=str(device))

    data, pixel_size = _load(str(src))
    if data.ndim not in (2, 3):
        raise CLIError(f"{src}: expected a 2-D section or (z, y, x) stack, got shape {tuple(data.shape)}", 1)
    stack = data.ndim == 3
    nz = data.shape[0] if stack else 1
    result = np.empty(tuple(data.shape), np.dtype(data.dtype))

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    n_corr = n_tiles = 0
    thresholds = []
    for z in range(nz):
        sec = np.asarray(data[z] if stack else data)
        target = result[z] if stack else result
        target[...] = sec
        grid = TileGrid(sec.shape, args.tile_size)
        if args.tiles == "all":
            gen = iter_correct_image(sec, model, params)
            while True:
                try:
                    msg = next(gen)
                except StopIteration as stop:
                    target[...] = stop.value
                    break
                if isinstance(msg, Notice):
                    say(msg.message)
            n_corr += grid.n_tiles
            n_tiles += grid.n_tiles
            say(f"section {z + 1}/{nz}: corrected all {grid.n_tiles} tiles")
            continue
        from .core.decisions import auto_thresholds
        from .core.focus import DEFAULT_METRIC, score_tiles

        metric = args.metric or DEFAULT_METRIC
        scores = np.asarray(score_tiles(sec, args.tile_size, metric), np.float64)
        t = thr
        if t is None:
            try:
                t = float(auto_thresholds(scores)[0])
            except ValueError:
                t = float("-inf")  # no finite score: nothing to flag
        thresholds.append(t)
        with np.errstate(invalid="ignore"):
            flagged = np.argwhere(scores < t)
        boxes = [grid.bounds(int(i), int(j)) for i, j in flagged]
        n_tiles += grid.n_tiles
        for msg in iter_correct_tiles(sec, model, boxes, params, z=z, grid_tile=args.tile_size):
            if isinstance(msg, TileResult):
                h, w = msg.data.shape
                target[msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
                n_corr += 1
            elif isinstance(msg, Notice):
                say(msg.message)
        say(f"section {z + 1}/{nz}: {len(boxes)}/{grid.n_tiles} tiles below {metric} threshold {t:.4g} corrected")

    meta = {
        "emdeblur": {
            "command": "correct",
            "input": str(src),
            "tiles": args.tiles,
            "tile_size": args.tile_size,
            "thresholds": thresholds,
            "tiles_corrected": n_corr,
            "weights": str(args.weights or shipped_weights_path()),
            "weights_sha256": card.get("weights_sha256"),
            "model_type": card.get("model_type"),
        }
    }
    written = _save(out, result, pixel_size, meta, args.overwrite, str(src))
    say(f"wrote {written} ({n_corr}/{n_tiles} tiles corrected, {time.monotonic() - t0:.1f} s)")
    return 0
