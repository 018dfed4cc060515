"""The one correction service: ``iter_correct(image, selection, params)``.

The napari correction widget (in a worker thread), ``emdeblur correct`` and the acquisition
pipeline all run this generator; none has a correction flow of its own. It loads the model
through the one cache (:mod:`.cache`) on the one device resolver (:mod:`.device`), corrects the
:class:`~napari_emdeblur.deblur.selection.Selection` (whole image, flagged QC tiles or
rectangles) section by section, and yields, in order:

* :class:`~napari_emdeblur.qc.messages.Notice` (device, tile and batch, GPU out-of-memory retries);
* :class:`~napari_emdeblur.qc.messages.Progress` (corrected tiles of all tiles);
* for each section worked on, its focus :class:`~napari_emdeblur.qc.messages.SectionScores`
  before correction;
* one :class:`~napari_emdeblur.qc.messages.TileResult` per corrected QC tile (its pixels, same
  dtype as the input; ``info`` holds the :class:`~napari_emdeblur.deblur.reports.TileReport`
  fields: focus before/after, estimated blur, fidelity ratio and, with a ground truth, PSNR/SSIM);
* last, the :class:`~napari_emdeblur.deblur.reports.CorrectionReport` (also returned).

Tiles without tissue signal (the content check of the QC blur map, ``qc.blurmap``: flat, saturated,
blank resin or pure noise) are never corrected, whatever the selection: they yield no
``TileResult`` (the caller keeps their pixels), a ``Notice`` says how many were skipped, and the
report's ``meta["skipped_empty"]`` lists them as ``[z, row, col]``.

The caller pastes ``TileResult.data`` into its output; the input is never modified. The
generator stops cleanly between batches when the consumer stops iterating (a napari worker's
``quit()``), after releasing GPU memory. Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Generator

import numpy as np

from ..io.values import fixed_range, parse_range_mode, value_range
from ..qc.blurmap import qc_grid
from ..qc.focus import DEFAULT_METRIC, MIN_IMAGE_SIDE, score_tiles
from ..qc.messages import Notice, Progress, SectionScores, TileResult
from ..qc.psf import quant_step
from ..qc.tiling import DEFAULT_TILE, TileGrid
from .fidelity import FIDELITY_RATIO_LIMIT, check_fidelity
from .metrics import psnr_ssim
from .reports import CorrectionReport, TileReport
from .selection import Selection

__all__ = ["DEFAULT_OVERLAP", "DEVICE_CHOICES", "PRECISION_NAMES", "CorrectionParams", "TimeLeft", "auto_tile_batch", "correct",
           "check_device_name", "iter_correct"]

#: overlap of inference windows and context margin around QC tiles (px)
DEFAULT_OVERLAP = 32
#: numeric precisions of inference (bf16/fp16 on CUDA only; elsewhere fp32 is used)
PRECISION_NAMES = ("fp32", "bf16", "fp16")
#: device choices a menu offers; ``cuda:N`` (a given GPU) is accepted too (:func:`check_device_name`)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """``name`` lower-cased if it names a device (:data:`DEVICE_CHOICES` or ``cuda:N``), else
    ``ValueError``; whether the device exists here is checked when the model loads.
    """
    n = str(name).strip().lower()
    if not _DEVICE_RE.match(n):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return n


@dataclass
class CorrectionParams:
    """What to run and how. ``tile``/``batch`` 0 = chosen from free memory (:func:`auto_tile_batch`)."""

    weights: str | None = None  # None = the shipped weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the half precisions on GPU only)
    tile: int = 0  # inference window (px)
    overlap: int = DEFAULT_OVERLAP  # window overlap / context margin around QC tiles (px)
    batch: int = 0  # windows per forward pass
    qc_tile: int = DEFAULT_TILE  # the QC grid the tiles and reports refer to
    metric: str | None = None  # focus metric for before/after scores (None = default)
    fidelity: bool = True  # estimate each tile's blur and check the correction against it
    ensemble: bool = False  # quality mode: average the 8 flips/rotations (8x the inference time)
    keep_sharp: bool = True  # do-no-harm gate: windows without excess blur come out unchanged (deblur.gate)
    fidelity_limit: float = FIDELITY_RATIO_LIMIT
    # how values map onto the model's [0, 1] and the PSNR peak: auto | dtype | (lo, hi) (io.values)
    value_range: str | tuple[float, float] = "auto"

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot run (before any model is loaded)."""
        parse_range_mode(self.value_range)
        check_device_name(self.device)
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {self.precision!r}")
        if self.qc_tile < MIN_IMAGE_SIDE:
            raise ValueError(f"QC tile must be at least {MIN_IMAGE_SIDE} px, got {self.qc_tile}")
        if self.tile < 0 or self.batch < 0 or self.overlap < 0:
            raise ValueError("tile, batch and overlap must not be negative")


def auto_tile_batch(device, precision: str = "fp32", requested_tile: int = 0, requested_batch: int = 0,
                    qc_tile: int = DEFAULT_TILE) -> tuple[int, int]:
    """Inference tile and batch from the free memory of ``device`` (overridable).

    Activation memory of the shipped GRAN is roughly ``BYTES_PER_PX`` bytes per input pixel in
    fp32 (measured); at most a quarter of what is free is used.
    """
    bytes_per_px = 6_000.0 if precision == "fp32" else 3_500.0
    tile = requested_tile or max(128, min(1024, qc_tile + 64))
    if requested_batch:
        return tile, requested_batch
    free = None
    if getattr(device, "type", "") == "cuda":
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(device)
        except Exception:  # pragma: no cover - best effort
            free = None
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            free = 2 << 30
        free = min(free, 4 << 30)  # CPU: batching gains little; keep the footprint modest
    batch = int(max(1, min(32, (free / 4) // (bytes_per_px * tile * tile))))
    return tile, batch


@dataclass
class _Empty:
    """The part of a blur map the correction needs for the tiles of a lazy section."""

    empty: np.ndarray


def _score_one(pixels: np.ndarray, qc_tile: int, metric: str) -> float:
    if min(pixels.shape) < MIN_IMAGE_SIDE:
        return math.nan
    return float(score_tiles(pixels, qc_tile, metric)[0, 0])


def iter_correct(
    image: Any,
    selection: Selection,
    params: CorrectionParams,
    *,
    ground_truth: Any | None = None,
    model: tuple | None = None,
) -> Generator[Notice | Progress | SectionScores | TileResult | CorrectionReport, None, CorrectionReport]:
    """Correct ``selection`` of ``image`` (2-D, or ``(z, y, x)``; numpy or dask); see the module doc.

    Parameters
    ----------
    image : array
        The section or stack (8- or 16-bit EM; other dtypes by their value range).
    selection : Selection
        Whole image, or ``(z, row, col)`` tiles of the ``params.qc_tile`` grid.
    params : CorrectionParams
        Model, device, inference and report settings.
    ground_truth : array, optional
        Sharp reference of the same shape: adds PSNR/SSIM before and after to the reports.
    model : (torch.nn.Module, dict), optional
        A loaded model and its card; default: ``params.weights`` through the model cache.

    Returns
    -------
    CorrectionReport
        Also yielded as the last message.
    """
    from .cache import get_model
    from .device import device_name, gpu_count, release_memory, resolve_device
    from .infer import InferenceParams, NonFiniteOutputError

    params.validate()
    metric = params.metric or DEFAULT_METRIC
    is_stack = len(image.shape) == 3
    grid = TileGrid(tuple(int(s) for s in image.shape[-2:]), params.qc_tile)  # type: ignore[arg-type]
    if ground_truth is not None and tuple(ground_truth.shape) != tuple(image.shape):
        raise ValueError(f"ground truth shape {tuple(ground_truth.shape)} differs from the image {tuple(image.shape)}")
    work = selection.by_section(image.shape, params.qc_tile)
    device = resolve_device(params.device)
    net, card = model if model is not None else get_model(params.weights, device)
    tile, batch = auto_tile_batch(device, params.precision, params.tile, params.batch, params.qc_tile)
    stack_range = fixed_range(image, params.value_range)  # one (lo, hi) for an in-memory stack
    meta = {
        "device": device_name(device), "precision": params.precision, "tile": tile, "batch": batch,
        "overlap": params.overlap, "qc_tile": params.qc_tile, "metric": metric, "ensemble": params.ensemble,
        "keep_sharp": params.keep_sharp,
        "selection": "whole image" if selection.whole else f"{len(selection)} tiles",
        "weights": params.weights or "shipped", "weights_sha256": card.get("weights_sha256"),
        "model_type": card.get("model_type"), "fidelity_limit": params.fidelity_limit if params.fidelity else None,
        "value_range": list(stack_range) if isinstance(stack_range, tuple) else stack_range,
    }
    total = sum(len(ij) for ij in work.values())
    yield Notice(f"Correcting {total} tiles on {meta['device']} ({params.precision}, tile {tile}, batch {batch})",
                 info={**{k: meta[k] for k in ("device", "precision", "tile", "batch")}, "gpus": gpu_count()})
    reports: list[TileReport] = []
    skipped: list[list[int]] = []
    meta["skipped_empty"] = skipped
    warnings: list[str] = []  # the warning Notices of the run (e.g. tiles blurred beyond the model's range)
    meta["warnings"] = warnings
    done = 0
    left = TimeLeft(batch)
    try:
        yield Progress(0, total, "correct")
        for z, ij in sorted(work.items()):
            # tiles of a lazy section (a mosaic, OME-Zarr): only the windows around them are read
            lazy = not selection.whole and not isinstance(image, np.ndarray)
            section = image[z] if is_stack else image
            section = section if lazy else np.asarray(section)
            gt = None if ground_truth is None else (ground_truth[z] if is_stack else ground_truth)
            gt = gt if gt is None or lazy else np.asarray(gt)
            lo, hi = value_range(section, stack_range)
            ip = InferenceParams(tile=tile, overlap=params.overlap, batch=batch, device=str(device),
                                 precision=params.precision, value_range=(lo, hi), ensemble=params.ensemble,
                                 keep_sharp=params.keep_sharp)
            # the content check of the blur map: empty tiles are never corrected
            if lazy:  # the tiles to correct only (NaN elsewhere), each read once
                before = np.full(grid.grid_shape, np.nan, np.float32)
                qcmap = _Empty(np.zeros(grid.grid_shape, bool))
                for i, j in ij:
                    pix = np.asarray(section[grid.slices(i, j)])
                    one = qc_grid(pix, params.qc_tile, value_range=(lo, hi))
                    qcmap.empty[i, j] = bool(one.empty[0, 0])
                    before[i, j] = one.score[0, 0] if metric == "blur" else _score_one(pix, grid.tile, metric)
            else:
                qcmap = qc_grid(section, params.qc_tile, value_range=(lo, hi))
                before = qcmap.score if metric == "blur" else score_tiles(section, params.qc_tile, metric)
            yield SectionScores(z, before, params.qc_tile, metric)  # before/after heatmaps need it
            empty = [(i, j) for i, j in ij if qcmap.empty[i, j]]
            if empty:
                ij = [t for t in ij if not qcmap.empty[t]]
                skipped.extend([z, i, j] for i, j in empty)
                done += len(empty)
                yield Notice(f"Section {z}: {len(empty)} tile(s) without tissue signal (empty) left uncorrected",
                             info={"section": z, "empty_tiles": [list(t) for t in empty]})
                yield Progress(done, total, "correct")
            if not ij:
                continue
            quant = quant_step(section.dtype, lo, hi)
            left.start()  # reading the section and model loading never count as tile time
            tiles = _corrected_tiles(section, net, ij, grid, ip, z, selection.whole, done, total, metric)
            for item in _naming(tiles, params.weights or "the shipped weights", NonFiniteOutputError):
                if isinstance(item, (Notice, Progress)):
                    if isinstance(item, Notice) and item.level == "warning":
                        warnings.append(f"section {z}: {item.message}" if is_stack else item.message)
                    yield item
                    continue
                (i, j), pixels, after = item
                y0, x0, h, w = grid.bounds(i, j)
                rep = TileReport(section=z, row=i, col=j, y0=y0, x0=x0, height=h, width=w,
                                 score_before=float(before[i, j]), score_after=after, decision="correct",
                                 corrected=True)
                orig = np.asarray(section[y0 : y0 + h, x0 : x0 + w])
                if params.fidelity:
                    fid = check_fidelity(orig, pixels, lo, hi, quant)
                    rep.blur_major, rep.blur_minor, rep.blur_angle = fid.blur_major, fid.blur_minor, fid.blur_angle
                    rep.noise, rep.fidelity_ratio = fid.noise, fid.ratio
                    rep.check_by_eye = bool(fid.ratio > params.fidelity_limit)
                if gt is not None:
                    ref = np.asarray(gt[y0 : y0 + h, x0 : x0 + w])
                    rep.psnr_before, rep.ssim_before = psnr_ssim(ref, orig, hi - lo)
                    rep.psnr_after, rep.ssim_after = psnr_ssim(ref, pixels, hi - lo)
                reports.append(rep)
                done += 1
                yield TileResult(z, i, j, y0, x0, pixels, asdict(rep))
                yield Progress(done, total, "correct", eta_s=left.tile_done(done, total))
    finally:
        release_memory(device)
    report = CorrectionReport(tiles=reports, meta=meta)
    yield report
    return report


class TimeLeft:
    """Time-left estimate from measured tile times (never from model loading or section reading).

    Until a full batch after the first tile is done, the mean time per tile since inference
    started (so the first tile's warm-up counts); after that the mean time per tile after the
    first tile (``batch`` tiles finish together, so fewer would be a burst, not a rate).
    """

    def __init__(self, batch: int = 1):
        self.batch = max(1, int(batch))
        self._t_start: float | None = None
        self._t_first: float | None = None
        self._n_first = 0

    def start(self) -> None:
        """Inference is about to start (called once per run)."""
        if self._t_start is None:
            self._t_start = time.perf_counter()

    def tile_done(self, done: int, total: int) -> float:
        """Seconds left after ``done`` of ``total`` tiles."""
        now = time.perf_counter()
        if self._t_start is None:
            self._t_start = now
        if self._t_first is None:
            self._t_first, self._n_first = now, done
        after = done - self._n_first
        if after >= self.batch:
            rate = (now - self._t_first) / after
        else:
            rate = (now - self._t_start) / max(1, done)
        return rate * (total - done)


def _naming(gen, where: str, kind: type[Exception]):
    """``gen``, with an error of type ``kind`` re-raised naming ``where`` (the weights file)."""
    try:
        yield from gen
    except kind as e:
        raise kind(f"{where}: {e}") from None


def _corrected_tiles(section, net, ij, grid: TileGrid, ip, z: int, whole: bool, done: int, total: int,
                     metric: str):
    """Run the model on one section: yields its Notices, Progress in units of QC tiles, and
    ``((row, col), pixels, score after)`` per corrected tile (as soon as it is done).
    """
    from .infer import iter_correct_image, iter_correct_tiles

    if whole:
        gen = iter_correct_image(section, net, ip)
        while True:
            try:
                msg = next(gen)
            except StopIteration as stop:
                out = stop.value
                break
            if isinstance(msg, Progress) and msg.total:
                yield Progress(min(done + len(ij) * msg.done // msg.total, done + len(ij) - 1), total, "correct")
            elif isinstance(msg, Notice):
                yield msg
        after = score_tiles(out, grid.tile, metric)
        for i, j in ij:
            yield (i, j), out[grid.slices(i, j)], float(after[i, j])
        return
    boxes = [grid.bounds(i, j) for i, j in ij]
    index = {b[:2]: ij_ for b, ij_ in zip(boxes, ij)}
    for msg in iter_correct_tiles(section, net, boxes, ip, z=z):
        if isinstance(msg, TileResult):
            yield index[(msg.y0, msg.x0)], msg.data, _score_one(msg.data, grid.tile, metric)
        elif isinstance(msg, Notice):
            yield msg


def correct(image: Any, selection: Selection, params: CorrectionParams, **kw) -> tuple[np.ndarray, CorrectionReport]:
    """Run :func:`iter_correct` to the end; returns ``(corrected copy of image, report)``."""
    out = np.array(image, copy=True)
    report = CorrectionReport()
    for msg in iter_correct(image, selection, params, **kw):
        if isinstance(msg, TileResult):
            h, w = msg.data.shape
            (out[msg.z] if out.ndim == 3 else out)[msg.y0 : msg.y0 + h, msg.x0 : msg.x0 + w] = msg.data
        elif isinstance(msg, CorrectionReport):
            report = msg
    return out, report
