"""Single 2-D image files of any readable format: read one eagerly, or probe its shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import read_error
from .formats import is_tiff
from .tiff import check_tiff_complete, read_tiff, tiff_to_yx
from .values import MIN_SIZE, validate_image

__all__ = ["probe_shape", "read_other", "read_plane", "yx_shape"]


def read_other(path: Path, content: bytes | None = None) -> np.ndarray:
    import imageio.v3 as iio

    try:
        arr = iio.imread(path) if content is None else iio.imread(content, extension=path.suffix.lower())
    except Exception as e:  # noqa: BLE001
        raise read_error(path, e, "corrupt, truncated or not an image file") from None
    return np.asarray(arr)


def read_plane(path: Path) -> np.ndarray:
    """Read one 2-D image (tile or stack slice) eagerly, validated to (Y, X)."""
    if is_tiff(path):
        data, axes, _, _, _ = read_tiff(path, lazy_bytes=1 << 62)
        data = tiff_to_yx(data, axes, path)
    else:
        data = read_other(path)
    return validate_image(data, str(path))


def probe_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header only (colour axis included)."""
    if is_tiff(path):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                s = tif.series[0]
                check_tiff_complete(tif, s, path)
                shape = tuple(int(v) for v, a in zip(s.shape, s.axes) if v > 1 or a in "YX")
                return shape, np.dtype(s.dtype)
        except Exception as e:  # noqa: BLE001
            raise read_error(path, e, "corrupt, truncated or not a TIFF file") from None
    import imageio.v3 as iio

    try:
        props = iio.improps(path)
    except Exception as e:  # noqa: BLE001
        raise read_error(path, e, "corrupt, truncated or not an image file") from None
    return tuple(int(v) for v in props.shape), np.dtype(props.dtype)


def yx_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) >= 3 and shape[-1] in (2, 3, 4) and min(shape[-3:-1]) >= MIN_SIZE:
        return int(shape[-3]), int(shape[-2])
    return int(shape[-2]), int(shape[-1])
