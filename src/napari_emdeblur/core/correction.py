"""Correction of QC tiles with GRAN, with per-tile fidelity check and reports (no Qt).

:func:`iter_correct_section` is the generator the correction widget runs in a worker thread and
the CLI drains directly. It loads the model, corrects the chosen QC tiles one batch at a time,
and yields :class:`~napari_emdeblur.core.progress.TileResult` messages whose ``info`` holds the
focus score before/after, the estimated blur, the fidelity residual and (with a ground truth)
PSNR/SSIM. The caller pastes ``TileResult.data`` into its output; the input is never modified.

Fidelity check. A corrected tile ``c`` of an original tile ``o`` whose blur is estimated as a
Gaussian of ``sigma`` px should satisfy ``blur(c, sigma) ~= o`` up to noise. The residual
``r = o - blur(c, sigma)`` is compared with the noise level of ``o`` (robust MAD of its
finest-scale detail); ``ratio = rms(r) / noise``. A ratio far above 1 means the correction is
not explained by the original under the estimated blur: structure may have been invented, and the
tile is marked "check by eye".
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import ndimage

from . import decisions as dec
from .atomic import atomic_write_text
from .progress import Notice, Progress, SectionScores, TileResult
from .tiling import TileGrid
from .values import fixed_range, value_range

FIDELITY_RATIO_LIMIT = 3.0


@dataclass
class CorrectionParams:
    """What to run and how. ``tile``/``batch`` 0 = chosen automatically from free memory."""

    weights: str | None = None  # None = the shipped weights
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the half precisions on GPU only)
    tile: int = 0
    batch: int = 0
    qc_tile: int = 256  # the QC grid the tile indices refer to
    metric: str | None = None  # focus metric for before/after scores (None = default)
    fidelity_limit: float = FIDELITY_RATIO_LIMIT
    # how values map onto the model's [0, 1] and the PSNR peak: auto | dtype | (lo, hi) (core.values)
    value_range: str | tuple[float, float] = "auto"


@dataclass
class TileReport:
    """One row of the per-tile report."""

    section: int
    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int
    score_before: float = math.nan
    score_after: float = math.nan
    decision: str = "ok"
    corrected: bool = False
    accepted: bool | None = None  # None = not reviewed, True accepted, False rejected
    retake: bool = False
    blur_sigma: float = math.nan
    fidelity_ratio: float = math.nan
    check_by_eye: bool = False
    psnr_before: float = math.nan
    psnr_after: float = math.nan
    ssim_before: float = math.nan
    ssim_after: float = math.nan


# --------------------------------------------------------------------------- per-tile measures
def noise_level(tile: np.ndarray) -> float:
    """Robust noise sigma of a tile (MAD of the diagonal finest-scale detail, Donoho style)."""
    t = np.asarray(tile, np.float64)
    if min(t.shape) < 4:
        return float(t.std())
    d = (t[1:, 1:] - t[:-1, 1:] - t[1:, :-1] + t[:-1, :-1]) / 2.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def fidelity_ratio(original: np.ndarray, corrected: np.ndarray, sigma: float) -> float:
    """rms(original - blur(corrected, sigma)) / noise(original); ~1 when consistent."""
    o = np.asarray(original, np.float64)
    c = np.asarray(corrected, np.float64)
    reblurred = ndimage.gaussian_filter(c, sigma, mode="reflect") if sigma > 0.05 else c
    m = 4 if min(o.shape) > 16 else 0  # ignore the filter's boundary rows
    r = (o - reblurred)[m : o.shape[0] - m or None, m : o.shape[1] - m or None]
    noise = max(noise_level(o), 1e-6 * (np.ptp(o) or 1.0))
    return float(np.sqrt(np.mean(r**2)) / noise)


def psnr_ssim(ref: np.ndarray, img: np.ndarray, data_range: float) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ref = np.asarray(ref, np.float64)
    img = np.asarray(img, np.float64)
    psnr = float(peak_signal_noise_ratio(ref, img, data_range=data_range))
    win = min(7, min(ref.shape) - (1 - min(ref.shape) % 2))
    ssim = float(structural_similarity(ref, img, data_range=data_range, win_size=max(3, win)))
    return psnr, ssim


# --------------------------------------------------------------------------- tile selection
def tiles_from_decisions(decisions: np.ndarray, which: str = "flagged") -> list[tuple[int, int, int]]:
    """(z, row, col) of the tiles to correct: ``flagged`` = decision CORRECT, ``all`` = every tile."""
    d = np.asarray(decisions)
    if d.ndim == 2:
        d = d[None]
    if which == "all":
        sel = np.ones(d.shape, bool)
    elif which == "flagged":
        sel = d == dec.CORRECT
    else:
        raise ValueError(f"unknown tile selection {which!r}")
    return [tuple(int(v) for v in idx) for idx in np.argwhere(sel)]


def tiles_in_rectangle(grid: TileGrid, y0: float, x0: float, y1: float, x1: float) -> list[tuple[int, int]]:
    """Grid tiles overlapping the pixel rectangle ``[y0, y1] x [x0, x1]`` (data coordinates)."""
    ya, yb = sorted((y0, y1))
    xa, xb = sorted((x0, x1))
    i0 = max(0, int(np.floor((ya + 0.5) / grid.tile)))
    i1 = min(grid.rows - 1, int(np.floor((yb - 0.5) / grid.tile)))
    j0 = max(0, int(np.floor((xa + 0.5) / grid.tile)))
    j1 = min(grid.cols - 1, int(np.floor((xb - 0.5) / grid.tile)))
    return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]


# --------------------------------------------------------------------------- auto sizing
def auto_tile_batch(device, precision: str = "fp32", requested_tile: int = 0, requested_batch: int = 0,
                    qc_tile: int = 256) -> tuple[int, int]:
    """Inference tile and batch from the free memory of ``device`` (overridable).

    Activation memory of the shipped GRAN is roughly ``BYTES_PER_PX`` bytes per input pixel in
    fp32 (measured); we use at most a quarter of what is free.
    """
    BYTES_PER_PX = 6_000.0 if precision == "fp32" else 3_500.0
    tile = requested_tile or max(128, min(1024, qc_tile + 64))
    if requested_batch:
        return tile, requested_batch
    free = None
    try:
        import torch

        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # pragma: no cover - best effort
        free = None
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            free = 2 << 30
        free = min(free, 4 << 30)  # CPU: batching gains little; keep the footprint modest
    batch = int(max(1, min(32, (free / 4) // (BYTES_PER_PX * tile * tile))))
    return tile, batch


# --------------------------------------------------------------------------- the generator
def iter_correct_section(
    data: Any,
    tiles: Sequence[tuple[int, int, int]],
    params: CorrectionParams,
    ground_truth: Any | None = None,
    model_and_card: tuple | None = None,
) -> Iterator[Progress | Notice | TileResult]:
    """Correct the QC tiles ``tiles`` = [(z, row, col), ...] of ``data`` (2-D or 3-D array).

    Yields ``Notice`` (device, retries), ``Progress``, the focus ``SectionScores`` of each section
    it works on (before correction) and one ``TileResult`` per corrected tile;
    returns the list of :class:`TileReport`. Stops cleanly between batches when the consumer
    stops iterating (a napari worker's ``quit()``), after releasing GPU memory.
    """
    from ..model.infer import InferenceParams, iter_correct_tiles, resolve_device
    from ..model.weights import load_model
    from .blur_estimate import estimate_blur_tiles
    from .focus import DEFAULT_METRIC, score_tiles

    metric = params.metric or DEFAULT_METRIC
    is_stack = getattr(data, "ndim", 2) == 3
    shape2d = tuple(data.shape[-2:])
    grid = TileGrid(shape2d, params.qc_tile)
    if ground_truth is not None and tuple(ground_truth.shape) != tuple(data.shape):
        raise ValueError(f"ground truth shape {tuple(ground_truth.shape)} differs from the image {tuple(data.shape)}")
    device = resolve_device(params.device)
    if model_and_card is None:
        model, card = load_model(params.weights, device=str(device))
    else:
        model, card = model_and_card
    tile, batch = auto_tile_batch(device, params.precision, params.tile, params.batch, params.qc_tile)
    yield Notice(f"Correcting {len(tiles)} tiles on {device_name(device)} ({params.precision}, "
                 f"tile {tile}, batch {batch})",
                 info={"device": device_name(device), "precision": params.precision, "tile": tile, "batch": batch})
    stack_range = fixed_range(data, params.value_range)  # one (lo, hi) for an in-memory stack
    reports: list[TileReport] = []
    by_z: dict[int, list[tuple[int, int]]] = {}
    for z, i, j in tiles:
        by_z.setdefault(int(z), []).append((int(i), int(j)))
    total, done, t0 = len(tiles), 0, time.perf_counter()
    try:
        yield Progress(0, total, "correct")
        for z, ij in sorted(by_z.items()):
            section = np.asarray(data[z] if is_stack else data)
            gt = None if ground_truth is None else np.asarray(ground_truth[z] if is_stack else ground_truth)
            lo_hi = value_range(section, stack_range)
            rng = lo_hi[1] - lo_hi[0]  # PSNR/SSIM peak, the same scale the model saw
            ip = InferenceParams(tile=tile, batch=batch, device=str(device), precision=params.precision,
                                 value_range=lo_hi)
            boxes = [grid.bounds(i, j) for i, j in ij]
            box_index = {b[:2]: ij_ for b, ij_ in zip(boxes, ij)}
            before = score_tiles(section, params.qc_tile, metric)
            yield SectionScores(z, before, params.qc_tile, metric)  # before/after heatmaps need it
            sigmas = estimate_blur_tiles(section, params.qc_tile)
            for msg in iter_correct_tiles(section, model, boxes, ip, z=z):
                if isinstance(msg, TileResult):
                    i, j = box_index[(msg.y0, msg.x0)]
                    y0, x0, h, w = grid.bounds(i, j)
                    orig = section[y0 : y0 + h, x0 : x0 + w]
                    rep = TileReport(section=z, row=i, col=j, y0=y0, x0=x0, height=h, width=w,
                                     score_before=float(before[i, j]), decision="correct", corrected=True,
                                     blur_sigma=float(sigmas[i, j]))
                    rep.score_after = float(score_tiles(msg.data, max(h, w, 16), metric).ravel()[0]) \
                        if min(h, w) >= 16 else math.nan
                    rep.fidelity_ratio = fidelity_ratio(orig, msg.data, rep.blur_sigma)
                    rep.check_by_eye = bool(rep.fidelity_ratio > params.fidelity_limit)
                    if gt is not None:
                        ref = gt[y0 : y0 + h, x0 : x0 + w]
                        rep.psnr_before, rep.ssim_before = psnr_ssim(ref, orig, rng)
                        rep.psnr_after, rep.ssim_after = psnr_ssim(ref, msg.data, rng)
                    msg.z, msg.row, msg.col = z, i, j
                    msg.info.update(asdict(rep))
                    reports.append(rep)
                    done += 1
                    el = time.perf_counter() - t0
                    yield msg
                    yield Progress(done, total, "correct", eta_s=el / done * (total - done))
                elif isinstance(msg, Notice):
                    yield msg
    finally:
        release_memory(device)
    return reports


def device_name(device) -> str:
    try:
        import torch

        if device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(device)})"
    except Exception:  # pragma: no cover
        pass
    return str(device)


def release_memory(device) -> None:
    try:
        import torch

        if getattr(device, "type", "") == "cuda":
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


# --------------------------------------------------------------------------- reports
def write_reports(stem: str | Path, reports: Sequence[TileReport], meta: dict | None = None,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` (scores before/after, decisions, review, fidelity)."""
    import csv
    import io

    stem = Path(stem)
    csv_path, json_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")
    for p in (csv_path, json_path):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} already exists")
    cols = list(TileReport.__dataclass_fields__)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in reports:
        w.writerow(asdict(r))
    doc = {"meta": meta or {}, "tiles": [asdict(r) for r in reports]}
    atomic_write_text(csv_path, buf.getvalue(), overwrite=overwrite)
    atomic_write_text(json_path, json.dumps(doc, indent=1, default=_json_default), overwrite=overwrite)
    return csv_path, json_path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
