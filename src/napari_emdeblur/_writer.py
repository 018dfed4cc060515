"""npe2 writer: one image layer -> TIFF (ImageJ), OME-TIFF or OME-Zarr, through ``napari_emdeblur.io``.

The pixel size comes from ``meta['metadata']['pixel_size']`` (set by our reader) or else from
``meta['scale']`` when that is not the default (1, 1). dtype is preserved; the layer metadata
go into the file as JSON (ImageJ Info / OME Description / zarr attribute ``emdeblur``). The
file is written to a temporary file beside the target and moved into place. napari's save
dialog has already asked before replacing an existing file, so existing targets are replaced,
but never the layer's own source file (``metadata['emdeblur_source']``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .io.formats import is_writable_name
from .io.write import save_image

_SKIP_META = {"tiles", "sample_tiles", "license"}


def _pixel_size(meta: dict, ndim: int) -> tuple[float, float] | None:
    md = meta.get("metadata") or {}
    ps = md.get("pixel_size")
    if ps:
        return float(ps[-2]), float(ps[-1])
    scale = meta.get("scale")
    if scale is not None and len(scale) >= 2:
        yx = (float(scale[-2]), float(scale[-1]))
        if any(abs(v - 1.0) > 1e-12 for v in yx):
            return yx
    return None


def write_single_image(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for ``.tif``/``.tiff``/``.ome.tif``/``.zarr``; returns ``[path]``.

    napari's save dialog has already asked before replacing an existing file, so this replaces
    one, but never the layer's own source file (``metadata['emdeblur_source']``).
    """
    return [str(write_layer(path, data, meta, overwrite=True))]


def write_layer(path: str | Path, data: Any, meta: dict, overwrite: bool = False) -> Path:
    """Write one image layer's data with its layer metadata (as from ``layer.as_layer_data_tuple()``):
    dtype, pixel size and z spacing preserved, metadata stored as JSON; atomic; refuses to replace
    the layer's source file, and any existing file unless ``overwrite``.
    """
    meta = meta or {}
    p = Path(path)
    if not is_writable_name(p):
        raise ValueError(f"{p}: unsupported output type; use .tif, .ome.tif or .zarr")
    if meta.get("multiscale") and isinstance(data, Sequence):  # the levels (a list, napari's MultiScaleData)
        data = data[0]
    if meta.get("rgb"):
        raise ValueError("RGB layers are not EM sections; convert to greyscale first")
    ndim = len(data.shape)
    md = meta.get("metadata") or {}
    scale = meta.get("scale")
    z_spacing = None
    if ndim == 3 and scale is not None and len(scale) == 3:
        if md.get("z_spacing") or abs(float(scale[0]) - 1.0) > 1e-12:
            z_spacing = float(scale[0])
    store = {k: v for k, v in md.items() if k not in _SKIP_META}
    store["layer_name"] = meta.get("name")
    source = md.get("emdeblur_source")
    protect = [source] if source else []
    return save_image(p, data, _pixel_size(meta, ndim), store, overwrite=overwrite,
                      z_spacing=z_spacing, protect=protect)
