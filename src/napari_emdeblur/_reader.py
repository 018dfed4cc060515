"""npe2 reader: EM sections, stacks, MultiSEM mosaics and OME-Zarr through ``napari_emdeblur.io``.

``get_reader(path)`` returns :func:`read_sections` when every path looks readable (cheap check,
no pixel data read) and None otherwise, so that napari can try other readers.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .io.read import can_read, load_section
from .io.section import Section, json_safe
from .io.values import is_dask_array

PathLike = str | os.PathLike


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """npe2 reader contribution: a reader function for ``path`` (or a list of paths) or None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    if not paths:
        return None
    try:
        if not all(can_read(p) for p in paths):
            return None
    except OSError:
        return None
    return read_sections


def _contrast_limits(data: Any) -> tuple[float, float] | None:
    """Contrast limits for lazy data from a small central sample (napari would read it all)."""
    dt = np.dtype(data.dtype)
    if dt == np.uint8:
        return (0.0, 255.0)
    if not is_dask_array(data):
        return None
    plane = data[data.shape[0] // 2] if data.ndim == 3 else data
    h, w = plane.shape
    cy, cx, r = h // 2, w // 2, 512
    sample = np.asarray(plane[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r])
    vals = sample[sample > 0] if (sample > 0).any() else sample.ravel()
    lo, hi = np.percentile(vals, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1
    return (float(lo), float(hi))


def section_to_layer_data(section: Section) -> tuple[Any, dict, str]:
    """A napari layer data tuple for a :class:`~napari_emdeblur.io.Section`."""
    meta = {k: json_safe(v) for k, v in section.metadata.items()}
    meta.update(
        emdeblur_source=section.source,
        pixel_size=list(section.pixel_size) if section.pixel_size else None,
        axes=section.axes,
        tiles=[asdict(t) for t in section.tiles] if section.tiles else None,
    )
    kwargs: dict = {"name": section.name or Path(section.source).name, "scale": section.scale,
                    "metadata": meta}
    cl = _contrast_limits(section.data)
    if cl is not None:
        kwargs["contrast_limits"] = cl
    return (section.data, kwargs, "image")


def read_sections(path: PathLike | Sequence[PathLike]) -> list[tuple[Any, dict, str]]:
    """Read one path, or a list of paths, into napari layer data tuples.

    A list of single 2-D sections of equal shape and dtype becomes one (z, y, x) stack (what
    napari asks for with ``stack=True``); otherwise every path gives its own layer.
    Unreadable input raises :class:`~napari_emdeblur.io.EMReadError` naming the file.
    """
    if isinstance(path, (str, os.PathLike)):
        return [section_to_layer_data(load_section(path))]
    sections = [load_section(p) for p in path]
    if len(sections) > 1 and all(
        s.axes == "yx" and s.shape == sections[0].shape and s.dtype == sections[0].dtype
        for s in sections
    ):
        if any(s.is_lazy for s in sections):
            import dask.array as da

            data = da.stack([s.data if s.is_lazy else da.from_array(s.data) for s in sections])
        else:
            data = np.stack([s.data for s in sections])
        first = sections[0]
        stack = Section(
            data, first.pixel_size, f"{first.name} (+{len(sections) - 1})",
            first.source, "zyx", None,
            {"format": "stack", "files": [s.source for s in sections],
             "warnings": [w for s in sections for w in s.metadata.get("warnings", [])]},
        )
        return [section_to_layer_data(stack)]
    return [section_to_layer_data(s) for s in sections]
