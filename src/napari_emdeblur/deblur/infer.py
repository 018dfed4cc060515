"""Tiled inference: correct whole images or just some tiles, with bounded memory.

Whole images (``correct_image`` / ``iter_correct_image``) are cut into windows of at most
``tile`` x ``tile`` px that overlap by ``overlap`` px (as small as covers the image with the
fewest windows, a multiple of the model's padding: :func:`window_size`); each window's output
is weighted by a separable raised-cosine ramp over the overlap on every side that borders
another window (weight 1 at the image border) and the weighted sum is normalised, so there
are no seams. Windows are processed one row at a time and finished rows are written out at
once, so the float buffers are one strip of windows, not the whole image.

QC tiles (``iter_correct_tiles``) are corrected each with a context margin around the box
(reflect-free: real neighbouring pixels where they exist) and only the box is returned.

Values (``InferenceParams.value_range``, see ``io.values``): uint8 /255; uint16 by its
significant bit depth (``auto``: a 12-bit image in a uint16 file /4095) or /65535 (``dtype``);
other integer types by their range; floats in [0, 1] as they are, other floats by their min/max;
or an explicit ``(lo, hi)``. One range per call, so all tiles of an image share it.
Every model output passes the do-no-harm gate (``InferenceParams.keep_sharp``, :mod:`.gate`): a
window whose input shows no excess blur comes out unchanged, and so does one blurred beyond what
the model was trained on (a warning ``Notice`` counts those; re-image them).
The output is clipped to the range and cast back (rounded for integers): same dtype, same
shape. On CUDA, ``precision`` bf16/fp16 runs the model under autocast; elsewhere fp32 is
used. A CUDA out-of-memory error halves the batch (then the tile, down to ``MIN_TILE``) and
retries, with a ``Notice``; a QC-tile window that does not fit even at batch 1 is then
processed with the blended tiling in halved tiles, like a window larger than ``tile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..io.values import from_unit, parse_range_mode, to_unit, value_range
from ..qc.messages import Notice, Progress, TileResult, drain
from .device import resolve_device
from .gate import BEYOND_FROM_PX, BEYOND_PX, apply_gate, weights_from_blur, window_blur
from .service import DEFAULT_OVERLAP, PRECISION_NAMES

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
MIN_TILE = 64


@dataclass
class InferenceParams:
    tile: int = 512  # largest window (px); windows shrink to cover an image with as few as this size needs
    overlap: int = DEFAULT_OVERLAP  # overlap between windows / context margin around QC tiles (px)
    batch: int = 4  # windows per forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the latter two on CUDA only)
    value_range: str | tuple[float, float] = "auto"  # auto | dtype | (lo, hi): see io.values
    ensemble: bool = False  # average the model over the 8 flips/rotations of each window (8x the time)
    keep_sharp: bool = True  # do-no-harm gate: windows without excess blur pass through (deblur.gate)

    def validate(self) -> None:
        parse_range_mode(self.value_range)
        if self.tile < MIN_TILE:
            raise ValueError(f"tile must be at least {MIN_TILE} px, got {self.tile}")
        if not 0 <= self.overlap < self.tile // 2:
            raise ValueError(f"overlap must be in [0, tile/2), got {self.overlap} for tile {self.tile}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


# --------------------------------------------------------------------------- tiling helpers
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering ``[0, length)`` with windows of ``min(tile, length)``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return sorted(set(starts))


def window_size(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest window (<= ``tile``, a multiple of ``multiple`` where it can be) that covers
    ``length`` px with as few windows as ``tile`` needs.

    A 2048 px side in 512 px windows overlapping by 32 needs 5 windows either way; windows of 436 px
    (440 at a multiple of 8) cover it as well, so a 2048 x 2048 image costs 26 % less model work
    (with full-size windows the last one of each row and column mostly repeats its neighbour).
    """
    if length <= tile:
        return length
    n = -(-(length - overlap) // (tile - overlap))  # windows needed at the full tile size
    size = -(-(length - overlap) // n) + overlap
    size = -(-size // multiple) * multiple if multiple > 1 else size
    return min(size, tile)


def ramp_1d(n: int, overlap: int, left: bool, right: bool) -> np.ndarray:
    """Raised-cosine weights of a window of ``n`` px; ramps on the sides that overlap."""
    w = np.ones(n, np.float32)
    o = min(overlap, n // 2)
    if o > 0:
        r = (0.5 - 0.5 * np.cos(np.pi * (np.arange(o) + 0.5) / o)).astype(np.float32)
        if left:
            w[:o] = np.minimum(w[:o], r)
        if right:
            w[n - o :] = np.minimum(w[n - o :], r[::-1])
    return w


class NonFiniteOutputError(ValueError):
    """The model produced NaN or infinite values: the result would be garbage, so nothing is written."""


class _Runner:
    """Runs the model on float32 (B,1,h,w) batches with autocast + OOM back-off."""

    def __init__(self, model: nn.Module, params: InferenceParams):
        params.validate()
        self.device = resolve_device(params.device)
        # channels-last weights: faster CPU (oneDNN) convolutions, the same results up to float rounding
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.batch = params.batch
        self.dtype = PRECISIONS[params.precision]
        self.autocast = self.device.type == "cuda" and self.dtype != torch.float32
        self.ensemble = params.ensemble
        self.keep_sharp = params.keep_sharp
        self.quant = 1.0 / 255.0  # the data's quantisation step in model units (set_range)
        self.beyond: list[bool] = []  # per window run: blurred beyond the trained range (the gate faded it out)

    def set_range(self, rng: tuple[float, float], dtype) -> None:
        """The value range of the image being corrected: the gate's quantisation step."""
        if np.dtype(dtype).kind in "iub" and rng[1] > rng[0]:
            self.quant = 1.0 / (rng[1] - rng[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self._model(x)
        if not np.isfinite(y).all():
            raise NonFiniteOutputError(
                "the model's output holds NaN or infinite values (damaged weights, or input the model cannot handle)"
            )
        if not self.keep_sharp:
            self.beyond.extend([False] * len(x))
            return y
        excess, empty = window_blur(x.reshape(len(x), x.shape[-2], x.shape[-1]), self.quant)
        self.beyond.extend((excess > BEYOND_FROM_PX).tolist())
        return apply_gate(x, y, weights=weights_from_blur(excess, empty))

    @torch.inference_mode()
    def _model(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.autocast):
            if not self.ensemble:
                return self.model(t).float().cpu().numpy()
            # geometric self-ensemble: each of the 8 flips/rotations, mapped back, averaged
            acc = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
            for k in range(4):
                for flip in (False, True):
                    v = torch.rot90(t, k, (-2, -1))
                    v = torch.flip(v, (-1,)) if flip else v
                    y = self.model(v).float()
                    y = torch.flip(y, (-1,)) if flip else y
                    acc += torch.rot90(y, -k, (-2, -1))
        return (acc / 8).cpu().numpy()

    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _beyond_notice(n: int, total: int, unit: str) -> Notice | None:
    """The warning for ``n`` of ``total`` windows/tiles blurred beyond the model's range (None for 0)."""
    if not n:
        return None
    return Notice(
        f"{n} of {total} {unit}(s) blurred beyond what the model was trained on (over {BEYOND_FROM_PX:g} px of "
        f"excess blur): left uncorrected (from {BEYOND_PX:g} px) or only partly corrected; re-image them",
        "warning",
    )


def _is_oom(e: BaseException) -> bool:
    """A GPU out-of-memory error (``torch.cuda.OutOfMemoryError``, or an MPS/CUDA RuntimeError
    saying so). Host ``MemoryError`` is not retried.
    """
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def _run_windows(run: _Runner, windows: list[np.ndarray]) -> Generator[Notice, None, list[np.ndarray]]:
    """Model outputs for same-sized float windows, in batches; halves the batch on CUDA OOM."""
    outs: list[np.ndarray] = []
    i = 0
    while i < len(windows):
        chunk = windows[i : i + run.batch]
        try:
            y = run(np.stack(chunk)[:, None])
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            run.empty_cache()
            if run.batch > 1:
                run.batch = max(1, run.batch // 2)
                yield Notice(f"GPU out of memory: retrying with batch {run.batch}", "warning")
                continue
            raise _TileTooLarge() from e
        outs.extend(y[:, 0])
        i += len(chunk)
    return outs


class _TileTooLarge(Exception):
    """Batch 1 still runs out of memory: the caller halves the tile."""


# --------------------------------------------------------------------------- whole images
def _check_2d(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("empty image")
    return image


def _correct_unit(
    run: _Runner, img: np.ndarray, tile: int, overlap: int, stage: str, out_fn, conv=None
) -> Generator[Progress | Notice, None, None]:
    """Blend-tiled model output of ``img``; finished row strips (float, model units) go to
    ``out_fn(y0, rows)``. ``conv`` maps a window to float [0, 1] (default: none needed).
    """
    conv = conv or (lambda a: np.asarray(a, np.float32))
    H, W = img.shape
    mult = int(getattr(run.model, "pad_multiple", 1))
    th, tw = window_size(H, tile, overlap, mult), window_size(W, tile, overlap, mult)
    ys, xs = tile_starts(H, th, overlap), tile_starts(W, tw, overlap)
    wx = [ramp_1d(tw, overlap, j > 0, j < len(xs) - 1) for j in range(len(xs))]
    total, done = len(ys) * len(xs), 0
    acc = np.zeros((th, W), np.float32)
    wacc = np.zeros((th, W), np.float32)
    base = ys[0]  # image row of acc[0]
    for i, y0 in enumerate(ys):
        wy = ramp_1d(th, overlap, i > 0, i < len(ys) - 1)
        windows = [conv(img[y0 : y0 + th, x0 : x0 + tw]) for x0 in xs]
        outs = yield from _run_windows(run, windows)
        r0 = y0 - base
        for j, (x0, o) in enumerate(zip(xs, outs)):
            w2 = wy[:, None] * wx[j][None, :]
            acc[r0 : r0 + th, x0 : x0 + tw] += o * w2
            wacc[r0 : r0 + th, x0 : x0 + tw] += w2
        done += len(xs)
        yield Progress(done, total, stage, f"tile row {i + 1}/{len(ys)}")
        nxt = ys[i + 1] if i + 1 < len(ys) else H
        nfin = nxt - base
        out_fn(base, acc[:nfin] / wacc[:nfin])
        keep = (y0 + th) - nxt  # rows already touched that the next row still adds to
        if keep > 0:
            acc[:keep] = acc[nfin : nfin + keep]
            wacc[:keep] = wacc[nfin : nfin + keep]
        acc[max(keep, 0) :] = 0
        wacc[max(keep, 0) :] = 0
        base = nxt


def _correct_unit_halving(
    run: _Runner, img: np.ndarray, tile: int, overlap: int, stage: str, out_fn, conv=None
) -> Generator[Progress | Notice, None, int]:
    """``_correct_unit`` with OOM back-off: when even batch 1 runs out of GPU memory, halve
    the tile (down to ``MIN_TILE``, overlap at most a quarter of it), yield a ``Notice`` and
    start again. Returns the tile size that succeeded.
    """
    while True:
        try:
            yield from _correct_unit(run, img, tile, overlap, stage, out_fn, conv)
            return tile
        except _TileTooLarge:
            if tile // 2 < MIN_TILE:
                raise MemoryError(
                    f"GPU out of memory even for the smallest tile ({MIN_TILE} px, batch 1)"
                ) from None
            tile //= 2
            overlap = min(overlap, tile // 4)
            yield Notice(f"GPU out of memory: retrying with tile {tile} px", "warning")


def iter_correct_image(
    image: np.ndarray, model: nn.Module, params: InferenceParams | None = None, stage: str = "correct"
) -> Generator[Progress | Notice, None, np.ndarray]:
    """Generator form of ``correct_image``: yields Progress/Notice, *returns* the result."""
    params = params or InferenceParams()
    image = _check_2d(image)
    rng = value_range(image, params.value_range)
    run = _Runner(model, params)
    run.set_range(rng, image.dtype)
    out = np.empty(image.shape, image.dtype)

    def put(y0: int, rows: np.ndarray) -> None:
        out[y0 : y0 + rows.shape[0]] = from_unit(rows, rng, image.dtype)

    try:
        yield from _correct_unit_halving(
            run, image, params.tile, params.overlap, stage, put, lambda a: to_unit(a, rng)
        )
    finally:
        run.empty_cache()
    if (note := _beyond_notice(sum(run.beyond), len(run.beyond), "window")) is not None:
        yield note
    return out


def correct_image(
    image: np.ndarray, model: nn.Module, params: InferenceParams | None = None
) -> np.ndarray:
    """Deblur a whole 2-D image; returns an array of the same dtype and shape."""
    return drain(iter_correct_image(image, model, params))


# --------------------------------------------------------------------------- some tiles
def iter_correct_tiles(
    image: np.ndarray,
    model: nn.Module,
    boxes: Sequence[tuple[int, int, int, int]],
    params: InferenceParams | None = None,
    z: int = 0,
    grid_tile: int | None = None,
) -> Iterator[Progress | Notice | TileResult]:
    """Correct only the given boxes ``(y0, x0, h, w)`` of a 2-D image.

    Each box is run with ``params.overlap`` px (at least 16) of real context around it where
    the image has it, then cropped back; a ``TileResult`` (same dtype as ``image``, shape
    ``(h, w)``) is yielded per box, with ``row, col = y0 // grid_tile, x0 // grid_tile``
    (``grid_tile`` defaults to the largest box side). Boxes whose context window exceeds
    ``params.tile`` are processed with the blended tiling of ``correct_image``, and so are
    windows that run out of GPU memory even at batch 1 (with the tile halved, see above).
    """
    params = params or InferenceParams()
    if isinstance(image, np.ndarray) or not hasattr(image, "shape"):
        image = _check_2d(image)
    elif len(image.shape) != 2:  # a lazy image stays lazy: only the windows around the boxes are read
        raise ValueError(f"expected a 2-D image, got shape {tuple(image.shape)}")
    H, W = image.shape
    boxes = [tuple(int(v) for v in b) for b in boxes]
    for b in boxes:
        y0, x0, h, w = b
        if h < 1 or w < 1 or y0 < 0 or x0 < 0 or y0 + h > H or x0 + w > W:
            raise ValueError(f"box {b} outside image of shape {image.shape}")
    gt = grid_tile or max([max(b[2], b[3]) for b in boxes], default=1)
    rng = value_range(image, params.value_range)
    run = _Runner(model, params)
    run.set_range(rng, image.dtype)
    margin = max(params.overlap, 16)
    total = len(boxes)
    done = 0
    n_beyond = 0  # boxes with a window the gate faded out as blurred beyond the trained range
    yield Progress(0, total, "correct tiles", "")

    def window(b):
        y0, x0, h, w = b
        wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
        wy1, wx1 = min(H, y0 + h + margin), min(W, x0 + w + margin)
        return wy0, wx0, wy1, wx1

    try:
        # group boxes whose windows have the same shape, so they can share a batch
        groups: dict[tuple[int, int], list[tuple]] = {}
        for b in boxes:
            wy0, wx0, wy1, wx1 = window(b)
            groups.setdefault((wy1 - wy0, wx1 - wx0), []).append(b)
        tile = params.tile  # shrinks for good after a GPU OOM at batch 1
        for (wh, ww), bs in groups.items():
            k = 0
            while k < len(bs):
                big = wh > tile or ww > tile
                chunk = bs[k : k + (1 if big else run.batch)]
                wins = []
                for b in chunk:
                    wy0, wx0, wy1, wx1 = window(b)
                    wins.append((b, wy0, wx0, to_unit(image[wy0:wy1, wx0:wx1], rng)))
                outs = None
                flags: list[bool] = []
                if not big:
                    try:
                        outs = yield from _run_windows(run, [w[3] for w in wins])
                        flags = run.beyond[len(run.beyond) - len(wins):]
                    except _TileTooLarge:
                        # a whole window does not fit even alone: blend-tile it in smaller tiles
                        while tile >= max(wh, ww):
                            tile //= 2
                        if tile < MIN_TILE:
                            raise MemoryError(
                                f"GPU out of memory for a single {wh}x{ww} window (batch 1) and it "
                                f"cannot be tiled below {MIN_TILE} px; use a smaller QC tile"
                            ) from None
                        yield Notice(
                            f"GPU out of memory for a {wh}x{ww} window: retrying with tile {tile} px",
                            "warning",
                        )
                if outs is None:
                    outs = []
                    for _b, _wy0, _wx0, u in wins:
                        res = np.empty(u.shape, np.float32)

                        def put(y, rows, res=res):
                            res[y : y + rows.shape[0]] = rows

                        overlap = params.overlap if tile == params.tile else min(params.overlap, tile // 4)
                        n0 = len(run.beyond)
                        tile = yield from _correct_unit_halving(
                            run, u, tile, overlap, "correct tiles (window)", put
                        )
                        outs.append(res)
                        flags.append(any(run.beyond[n0:]))
                n_beyond += sum(flags)
                for (b, wy0, wx0, _), o in zip(wins, outs):
                    y0, x0, h, w = b
                    crop = o[y0 - wy0 : y0 - wy0 + h, x0 - wx0 : x0 - wx0 + w]
                    data = from_unit(crop, rng, image.dtype)
                    done += 1
                    yield TileResult(z, y0 // gt, x0 // gt, y0, x0, data, {"context": margin})
                    yield Progress(done, total, "correct tiles", f"tile {done}/{total}")
                k += len(chunk)
    finally:
        run.empty_cache()
    if (note := _beyond_notice(n_beyond, total, "tile")) is not None:
        yield note
