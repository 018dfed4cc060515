"""OME-Zarr (NGFF 0.4 / 0.5) and plain zarr arrays, read lazily as dask arrays.

An NGFF ``multiscales`` group gives every dataset of its first multiscale as a level
(``Section.levels``); ``Section.data`` is the first (finest) one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EMReadError, GuardedReads, read_error
from .formats import stem_of
from .section import Section
from .units import unit_to_nm

__all__ = ["is_zarr_dir", "load_zarr"]


def is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and (
        p.suffix.lower() == ".zarr"
        or any((p / n).exists() for n in (".zattrs", ".zgroup", ".zarray", "zarr.json"))
    )


def load_zarr(path: Path) -> Section:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001
        raise read_error(path, e, "not a readable zarr store") from None
    ps = None
    pz = None
    extra: dict = {}
    axes_names: list[str] | None = None
    more: list = []  # the coarser levels of an NGFF multiscales group
    if isinstance(node, zarr.Array):
        arr = node
    else:
        attrs = dict(node.attrs)
        ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
        extra = attrs.get("emdeblur", {}) if isinstance(attrs.get("emdeblur"), dict) else {}
        if ms:
            try:
                m = ms[0]
                ds = m["datasets"][0]
                try:
                    arr = node[ds["path"]]
                    more = [node[d["path"]] for d in m["datasets"][1:]]
                except KeyError as e:
                    raise EMReadError(f"{path}: a multiscales dataset of {[d.get('path') for d in m['datasets']]} "
                                      "is missing") from e
                axes = m.get("axes") or []
                axes_names = [a["name"] if isinstance(a, dict) else str(a) for a in axes] or None
                scale = None
                for tr in ds.get("coordinateTransformations", []):
                    if tr.get("type") == "scale":
                        scale = [float(v) for v in tr["scale"]]
                for tr in m.get("coordinateTransformations", []) or []:
                    if tr.get("type") == "scale" and scale is not None:
                        scale = [a * float(b) for a, b in zip(scale, tr["scale"])]
                if scale and axes_names and len(scale) == len(axes_names):
                    units = {a["name"]: a.get("unit") for a in axes if isinstance(a, dict)}

                    def phys(ax: str) -> float | None:
                        if ax not in axes_names:
                            return None
                        f = unit_to_nm(units.get(ax))
                        return scale[axes_names.index(ax)] * f if f else None

                    py, px = phys("y"), phys("x")
                    if py is not None and px is not None:  # checked (with a warning) by load_section
                        ps = (py, px)
                    pz = phys("z")
            except EMReadError:
                raise
            except (TypeError, KeyError, AttributeError, ValueError, IndexError):
                raise EMReadError(
                    f"{path}: invalid OME-Zarr multiscales metadata (expected a list of objects whose "
                    "'datasets' each name a 'path', with numeric 'scale' transformations)"
                ) from None
        else:
            arrays = sorted(k for k, _ in node.arrays())
            if not arrays:
                raise EMReadError(f"{path}: zarr group holds no array")
            arr = node[arrays[0]]
    levels = [da.from_array(GuardedReads(a, path), chunks=a.chunks, name=False,
                            meta=np.empty((0,) * a.ndim, a.dtype)) for a in [arr, *more]]
    _decode_check(levels)
    if axes_names and len(axes_names) == levels[0].ndim:
        idx = tuple(
            0 if (a not in ("z", "y", "x") and s == 1) else slice(None)
            for a, s in zip(axes_names, levels[0].shape)
        )
        levels = [lv[idx] for lv in levels]
    sec = Section(levels[0], ps, stem_of(path), str(path), "yx", None,
                  {"format": "zarr", "z_spacing": pz, **({"emdeblur": extra} if extra else {})})
    if len(levels) > 1:
        sec.levels = levels
    return sec


#: a store level up to this size is decoded whole when opened (napari would draw all of it)
DECODE_CHECK_BYTES = 64 << 20


def _decode_check(levels: list) -> None:
    """Decode the chunks of each level once when the store is opened: all of a small level
    (:data:`DECODE_CHECK_BYTES`), else its first and last chunk, so that a damaged chunk is
    reported at open (:class:`EMReadError` from :class:`GuardedReads`), not when drawn.
    """
    for lv in levels:
        if lv.size == 0:
            continue
        if lv.nbytes <= DECODE_CHECK_BYTES:
            lv.compute(scheduler="synchronous")
        else:
            nb = lv.numblocks
            lv.blocks[(0,) * lv.ndim].compute(scheduler="synchronous")
            lv.blocks[tuple(n - 1 for n in nb)].compute(scheduler="synchronous")
