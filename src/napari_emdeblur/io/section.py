"""What the readers return: a :class:`Section` (or stack) and the tiles of a mosaic."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["AcqTile", "Section", "json_safe"]


@dataclass
class AcqTile:
    """One acquisition tile of a mosaic: its file and its placement (pixels) in plane ``z``."""

    path: str
    z: int
    y0: int
    x0: int
    height: int
    width: int


@dataclass
class Section:
    """An EM section (``axes='yx'``) or a stack of serial sections (``axes='zyx'``).

    ``data`` is a numpy array or, for large inputs, a dask array. ``pixel_size`` is ``(y, x)``
    in nm or None when unknown. ``metadata`` always holds a ``'warnings'`` list and only
    JSON-able values; ``reader`` is the live object behind a lazy mosaic (its tile cache), kept
    out of the metadata. ``tiles`` lists a mosaic's acquisition tiles (file and footprint).

    ``levels`` is the section as a multiscale pyramid, or None for a single-scale section:
    ``levels[0]`` is ``data``, level ``k`` has ``ceil(shape / 2**k)`` pixels in y and x and
    holds area means (:mod:`.pyramid`); ``pyramid`` is the live
    :class:`~napari_emdeblur.io.pyramid.Pyramid` that builds generated levels in the background
    (None when the file's own levels are used).
    """

    data: Any
    pixel_size: tuple[float, float] | None = None
    name: str = ""
    source: str = ""
    axes: str = "yx"
    tiles: list[AcqTile] | None = None
    metadata: dict = field(default_factory=dict)
    reader: Any = field(default=None, repr=False, compare=False)
    levels: list | None = field(default=None, repr=False, compare=False)
    pyramid: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.metadata.setdefault("warnings", [])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the data."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the data."""
        return np.dtype(self.data.dtype)

    @property
    def is_lazy(self) -> bool:
        """True when the data are not an in-memory numpy array (dask)."""
        return not isinstance(self.data, np.ndarray)

    @property
    def multiscale(self) -> bool:
        """True when the section comes with pyramid levels (``levels``)."""
        return self.levels is not None and len(self.levels) > 1

    @property
    def level_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the levels (just ``[shape]`` for a single-scale section)."""
        if not self.multiscale:
            return [self.shape]
        return [tuple(int(s) for s in lv.shape) for lv in self.levels or ()]

    @property
    def z_spacing(self) -> float | None:
        """Distance between sections in nm, when known."""
        return self.metadata.get("z_spacing")

    @property
    def scale(self) -> tuple[float, ...]:
        """Napari ``scale``: pixel size in nm (1 when unknown); z spacing 1 unless known."""
        yx = tuple(self.pixel_size) if self.pixel_size else (1.0, 1.0)
        if self.axes == "zyx":
            return (float(self.z_spacing or 1.0),) + yx
        return yx


def json_safe(obj: Any, depth: int = 0) -> Any:
    """Best-effort conversion to JSON-serialisable values (arrays summarised, objects str'd; NaN and
    inf become None, i.e. ``null``: JSON has no NaN, and ``json.dumps(..., allow_nan=False)`` of the
    result always succeeds). The one encoding of missing values in the package's JSON files.
    """
    if depth > 8:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        return obj
    if isinstance(obj, np.generic):
        return json_safe(obj.item(), depth + 1)
    if isinstance(obj, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.size <= 256:
            return json_safe(obj.tolist(), depth + 1)
        return f"<array shape={obj.shape} dtype={obj.dtype}>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return json_safe(asdict(obj), depth + 1)
    return str(obj)
