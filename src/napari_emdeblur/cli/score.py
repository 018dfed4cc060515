"""``emdeblur score``: focus score per tile of EM sections, decisions and a CSV report.

    emdeblur score INPUT... [--tile N] [--metric NAME] [--csv OUT] [--overwrite] [--subtiles]
                   [--correct-px PX] [--retake-px PX] [--window 128|160|full]
                   [--correct-threshold T] [--retake-threshold T] [--anisotropy]

Each INPUT is anything ``io.load_section`` reads (a TIFF / PNG, a multi-page stack, a
folder of images, a MultiSEM mosaic folder, OME-Zarr). One line per section is printed:
tiles scored, % to correct, % to retake, empty tiles (no tissue signal: never "ok", never
corrected), and the thresholds used. With the default metric, ``blur``, thresholds are in px of
excess blur (``--correct-px`` / ``--retake-px``, default 1 and 3 px, the same for every dataset:
``qc.thresholds``); ``--window`` sets the blur map's analysis window (160 px, the default; 128, the
fastest; or ``full`` tiles, the most accurate). For the other metrics thresholds default to
automatic, per section (section-relative); with only one given, the other is automatic, clipped
so that retake <= correct. ``--correct-threshold`` / ``--retake-threshold`` give thresholds as
scores for any metric.

A MultiSEM mosaic is scored per acquisition tile (``qc.acquisition``): every tile file is read
once and scored on its own ``--tile`` px sub-tiles, and gets one decision (a file without tissue
signal is ``empty``; mosaic gaps are no file and never flagged); the printed line counts files,
and the files to correct / retake / empty are listed by name. Other inputs are scored on a
regular ``--tile`` px grid.

``--csv`` writes the report atomically and refuses to replace an existing file unless
``--overwrite``: one row per grid tile (``qc.decisions.CSV_COLUMNS``, with the blur columns), or
for a mosaic one row per acquisition tile with its file path (``qc.acquisition.FILE_CSV_COLUMNS``,
with the blur columns; ``--subtiles`` adds each file's sub-tile rows). Bad input (unreadable
file, existing output, retake > correct, a threshold that is not a finite number) ends with a
one-line message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..qc.blurmap import DEFAULT_WINDOW
    from ..qc.focus import DEFAULT_METRIC, METRICS
    from ..qc.tiling import DEFAULT_TILE
    from .options import finite_float, int_range, window_arg

    p = sub.add_parser(
        "score",
        help="score focus per tile, flag tiles to correct / retake, write a CSV report",
        description="Score focus per tile (higher = sharper) and flag soft tiles.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file(s), stack(s) or folder(s)")
    p.add_argument("--tile", type=int_range(8, unit="px"), default=DEFAULT_TILE, help=f"tile size in px (default {DEFAULT_TILE})")
    p.add_argument("--metric", choices=list(METRICS), default=DEFAULT_METRIC,
                   help=f"focus metric (default {DEFAULT_METRIC})")
    p.add_argument("--csv", metavar="OUT", help="write a per-tile CSV report here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.add_argument("--subtiles", action="store_true",
                   help="mosaics: also write each acquisition tile's sub-tile rows into the CSV")
    p.add_argument("--correct-threshold", type=finite_float(), default=None, metavar="T",
                   help="tiles scoring below T are deblurred (a score; default: automatic per section, "
                   "for the blur metric 1 px)")
    p.add_argument("--retake-threshold", type=finite_float(), default=None, metavar="T",
                   help="tiles scoring below T must be re-imaged (a score; default: automatic per section, "
                   "for the blur metric 3 px)")
    p.add_argument("--correct-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: correct tiles with more than PX px of excess blur (default 1)")
    p.add_argument("--retake-px", type=finite_float(0.0), default=None, metavar="PX",
                   help="blur metric: retake tiles with more than PX px of excess blur (default 3)")
    p.add_argument("--window", type=window_arg, default=DEFAULT_WINDOW, metavar="128|160|full",
                   help=f"blur metric: analyse the centred 128 px (fastest) or 160 px of each tile, or full tiles "
                   f"(most accurate; default {DEFAULT_WINDOW or 'full'})")
    p.add_argument("--anisotropy", action="store_true",
                   help="also print the median blur anisotropy (astigmatism) per section")
    p.set_defaults(func=run)


def _load(path: str):
    """``(section, name)`` for one input via ``io.load_section`` (single scale: no pyramid is built)."""
    from ..io.read import load_section
    from . import report_warnings

    sec = load_section(path, multiscale=False)
    report_warnings(sec)
    return sec, (sec.source or str(path))


def _score_files(sec, name: str, params, subtiles: bool, out_rows: list[dict] | None,
                 ) -> tuple[int, int, int, int]:
    """Per-acquisition-tile QC of a mosaic: print one line (+ the flagged files), collect CSV rows."""
    from ..qc import decisions as dec
    from ..qc.acquisition import AcquisitionQC, iter_score_files

    result = None
    for msg in iter_score_files(sec.tiles, params, sec.shape):
        if isinstance(msg, AcquisitionQC):
            result = msg
    assert result is not None
    scores = result.scores
    n_total = 0
    for z in sorted(result.thresholds):
        m = result.planes == z
        valid = np.isfinite(scores) & m
        n = int(valid.sum())
        c, r = result.thresholds[z]
        nc = int(((result.decisions == dec.CORRECT) & valid).sum())
        nr = int(((result.decisions == dec.RETAKE) & valid).sum())
        ne = int(((result.decisions == dec.EMPTY) & m).sum())
        pct = (lambda k: 100.0 * k / n) if n else (lambda k: 0.0)
        zs = f" z={z}" if len(result.thresholds) > 1 else ""
        unscored = f" ({int(m.sum()) - n - ne} unscored)" if n + ne < int(m.sum()) else ""
        px = result.blur_px[m] if params.has_blurmap else None
        med, empty, th = _summary(params.metric, px, scores[m], ne, c, r)
        print(f"{name}{zs}: {n} acquisition tiles{unscored}, {med}, "
              f"correct {nc} ({pct(nc):.1f}%), retake {nr} ({pct(nr):.1f}%){empty}, {th}")
        for i in np.flatnonzero(m & (result.decisions != dec.OK)):
            f = result.files[int(i)]
            what = ("no tissue signal" if f.empty else f"blur {result.blur_px[i]:.2f} px" if px is not None
                    else f"focus {scores[i]:.4g}")
            print(f"  {result.decision_name(int(i))}: {f.path} ({what})")
        n_total += n
    if out_rows is not None:
        out_rows.extend(result.rows(subtiles=subtiles))
    _, nc_all, nr_all = result.counts()
    return n_total, nc_all, nr_all, result.n_empty()


def _summary(metric: str, blur_px, scores, n_empty: int, c: float, r: float) -> tuple[str, str, str]:
    """``(median, empty count, thresholds)`` parts of a printed line: in px for the blur metric."""
    from ..qc.thresholds import px_from_score

    if blur_px is not None:
        ex = blur_px[np.isfinite(blur_px)]
        med = f"median blur {float(np.median(ex)):.2f} px" if ex.size else "median blur n/a"
        th = f"thresholds correct>{px_from_score(c):.3g} px retake>{px_from_score(r):.3g} px"
        return med, f", empty {n_empty} ({100.0 * n_empty / max(1, scores.size):.1f}%)", th
    fin = scores[np.isfinite(scores)]
    med = f"median {metric} {float(np.median(fin)):.4g}" if fin.size else f"median {metric} n/a"
    return med, "", f"thresholds correct<{c:.4g} retake<{r:.4g}"


def run(args) -> int:
    from ..qc import decisions as dec
    from ..qc.messages import SectionScores
    from ..qc.scoring import ScoreParams, iter_score_stack
    from ..qc.tiling import TileGrid
    from . import CLIError

    params = ScoreParams(
        tile=args.tile,
        metric=args.metric,
        correct_threshold=args.correct_threshold,
        retake_threshold=args.retake_threshold,
        anisotropy=bool(args.anisotropy),
        correct_px=args.correct_px,
        retake_px=args.retake_px,
        window=args.window,
    )
    params.validate()  # ValueError -> one-line message, exit 1
    missing = [p for p in args.inputs if not Path(p).expanduser().exists()]
    if missing:  # before scoring the others (and writing no CSV after all)
        raise CLIError(f"{missing[0]}: no such file or folder")
    out = Path(args.csv) if args.csv else None
    if out is not None:
        from ..io.write import input_conflict

        clash = input_conflict(out, args.inputs)  # never over an input, nor into an input folder
        if clash:
            raise CLIError(f"--csv {clash}")
        if out.is_dir():
            raise CLIError(f"--csv {out} is a folder, not a file name")
        if out.exists() and not args.overwrite:
            raise CLIError(f"{out} already exists (use --overwrite to replace it)")
        if not (out.parent if str(out.parent) else Path(".")).is_dir():
            raise CLIError(f"folder {out.parent} does not exist")

    from ..qc.acquisition import FILE_CSV_COLUMNS

    rows: list[dict] = []
    file_rows: list[dict] = []
    total_tiles = total_c = total_r = total_e = 0
    for path in args.inputs:
        sec, name = _load(path)
        if sec.tiles:
            n, nc, nr, ne = _score_files(sec, name, params, bool(args.subtiles),
                                         file_rows if out is not None else None)
            total_tiles, total_c, total_r, total_e = total_tiles + n, total_c + nc, total_r + nr, total_e + ne
            continue
        data = sec.data
        if len(data.shape) not in (2, 3):
            raise CLIError(f"{path}: expected a 2-D section or a (z, y, x) stack, got shape {tuple(data.shape)}")
        grid = TileGrid((int(data.shape[-2]), int(data.shape[-1])), params.tile)
        nz = int(data.shape[0]) if len(data.shape) == 3 else 1
        for msg in iter_score_stack(data, params):
            if not isinstance(msg, SectionScores):
                continue
            s, d = msg.scores, msg.extras["decisions"]
            c, r = msg.extras["correct_threshold"], msg.extras["retake_threshold"]
            blur = msg.extras.get("blurmap")
            valid = np.isfinite(s)
            n = int(valid.sum())
            n_empty = dec.count_empty(d)
            nc, nr = dec.count_flagged(s, c, r) if np.isfinite(c) else (0, 0)
            pct = (lambda k: 100.0 * k / n) if n else (lambda k: 0.0)
            zs = f" z={msg.z}" if nz > 1 else ""
            unscored = f" ({s.size - n - n_empty} unscored)" if n + n_empty < s.size else ""
            med, empty, th = _summary(params.metric, None if blur is None else blur.excess, s, n_empty, c, r)
            line = (
                f"{name}{zs}: {n} tiles{unscored}, {med}, "
                f"correct {nc} ({pct(nc):.1f}%), retake {nr} ({pct(nr):.1f}%){empty}, {th}"
            )
            if params.anisotropy:
                ratio = msg.extras["anisotropy_ratio"]
                fin = ratio[np.isfinite(ratio)]
                line += f", anisotropy median {float(np.median(fin)):.3f}" if fin.size else ", anisotropy n/a"
            print(line)
            total_tiles += n
            total_c += nc
            total_r += nr
            total_e += n_empty
            if out is not None:
                rows.extend(dec.tile_rows(name, msg.z, grid, s, d, blur=blur))
    if len(args.inputs) > 1 and total_tiles:
        print(f"total: {total_tiles} tiles, correct {100.0 * total_c / total_tiles:.1f}%, "
              f"retake {100.0 * total_r / total_tiles:.1f}%" + (f", empty {total_e}" if total_e else ""))
    if out is not None:
        if file_rows and rows:
            raise CLIError("cannot write mosaics (one row per acquisition tile) and images (one row per grid "
                           "tile) into one CSV: score them separately")
        try:
            if file_rows:
                dec.write_tile_csv(out, file_rows, overwrite=args.overwrite, columns=FILE_CSV_COLUMNS)
            else:
                dec.write_tile_csv(out, rows, overwrite=args.overwrite)
        except FileExistsError as e:
            raise CLIError(str(e)) from None
        n_files = sum(r.get("level") == "file" for r in file_rows)
        what = (f"{n_files} acquisition tile rows" + (f" and {len(file_rows) - n_files} sub-tile rows"
                                                     if len(file_rows) > n_files else "")) if file_rows \
            else f"{len(rows)} tile rows"
        print(f"wrote {what} to {out}")
    return 0
