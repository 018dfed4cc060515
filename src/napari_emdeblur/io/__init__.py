"""Reading and writing EM sections (numpy, scipy, tifffile, imageio, dask, zarr; no torch, Qt or napari).

``load_section(path)`` returns a :class:`Section` for any of:

* a single image: TIFF / OME-TIFF / BigTIFF (tifffile), PNG / BMP / JPEG (imageio);
* a multi-page TIFF stack -> ``(Z, Y, X)`` (serial sections on z);
* a Zeiss MultiSEM-style folder holding ``full_image_coordinates.txt`` (or the path of that file),
  assembled **lazily** into one mosaic per z as a dask array (:mod:`.multisem`);
* a folder of images without a coordinates file -> a ``(Z, Y, X)`` stack, natural file order;
* an OME-Zarr (``.zarr`` folder, NGFF 0.4 or 0.5) or a plain zarr array -> dask array.

Modules, one role each:

* :mod:`.formats`: the one registry of file suffixes read and written;
* :mod:`.values`: the dtype policy (validation, colour to grey) and the value-range policy;
* :mod:`.tiff`, :mod:`.planes`, :mod:`.multisem`, :mod:`.zarr`: the formats;
* :mod:`.read`: :func:`load_section` and :func:`can_read`; :mod:`.write`: :func:`save_image`;
* :mod:`.atomic`: atomic file writes and sha256; :mod:`.section`: the :class:`Section` type;
* :mod:`.pyramid`: multiscale levels of big sections (area means, built in the background,
  cached as OME-Zarr in the user cache folder).

Policies (tested in ``tests/io``)
---------------------------------
* **dtype / colour / size**: see :mod:`.values`.
* **pixel size** (nm, ``(y, x)``): see :mod:`.tiff`; OME-Zarr scale transforms; unknown -> None.
* **laziness**: a single TIFF larger than ``lazy_bytes`` (default 1 GiB, env
  ``EMDEBLUR_LAZY_BYTES``) is returned as a dask array, so it is never read whole. Mosaics and
  zarr are always lazy. Lazy float/large-integer data are checked with a streaming reduction.
* **mosaic**: see :mod:`.multisem`.
* **multiscale**: a section larger than 4096 px on a side (env ``EMDEBLUR_MULTISCALE_SIDE``), or
  a file with its own levels, comes with ``Section.levels`` (see :mod:`.pyramid`); exports to
  OME-TIFF / OME-Zarr write pyramids (see :mod:`.write`).
* **errors**: unreadable input raises :class:`EMReadError` (a ``ValueError``) whose message names
  the file and what is wrong.
"""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file
from .errors import EMReadError
from .formats import IMAGE_SUFFIXES, WRITE_SUFFIXES, is_image_file, natural_sort_key
from .multisem import COORDS_NAME, parse_coordinates
from .read import can_read, load_section
from .section import AcqTile, Section
from .values import to_grayscale, validate_image, value_range
from .write import save_image, save_ome_zarr

__all__ = [
    "AcqTile",
    "COORDS_NAME",
    "EMReadError",
    "IMAGE_SUFFIXES",
    "Section",
    "WRITE_SUFFIXES",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "can_read",
    "is_image_file",
    "load_section",
    "natural_sort_key",
    "parse_coordinates",
    "save_image",
    "save_ome_zarr",
    "sha256_file",
    "to_grayscale",
    "validate_image",
    "value_range",
]
