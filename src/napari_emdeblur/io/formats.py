"""The one registry of image file formats: which suffixes are read, which are written.

Every module that lists, discovers or names image files (the readers, the npe2 manifest check in
the tests, the pipeline's discovery, the training data lists) asks here, so the lists cannot
disagree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: TIFF-family suffixes read with tifffile
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
#: other single-image suffixes read with imageio
OTHER_IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
#: every single-image file suffix that is read (lower case)
IMAGE_SUFFIXES = TIFF_SUFFIXES + OTHER_IMAGE_SUFFIXES
#: multi-part suffixes recognised before the plain last suffix
OME_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")
#: OME-TIFF suffixes (TIFF read/written with OME-XML and pyramid SubIFDs)
OME_TIFF_SUFFIXES = (".ome.tiff", ".ome.tif")
#: Zarr folders (OME-Zarr multiscales when they have them)
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
#: output suffixes of :func:`napari_emdeblur.io.save_image`
WRITE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".zarr")

__all__ = [
    "IMAGE_SUFFIXES",
    "OME_SUFFIXES",
    "OME_TIFF_SUFFIXES",
    "OTHER_IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "WRITE_SUFFIXES",
    "ZARR_SUFFIXES",
    "is_image_file",
    "is_tiff",
    "is_writable_name",
    "natural_sort_key",
    "stem_of",
    "suffix_of",
]


def is_writable_name(p: str | os.PathLike) -> bool:
    """Whether :func:`napari_emdeblur.io.save_image` writes a file or folder of this name
    (:data:`WRITE_SUFFIXES`, ``.ome.zarr`` included).
    """
    return suffix_of(p) in WRITE_SUFFIXES + OME_SUFFIXES


def suffix_of(p: str | os.PathLike) -> str:
    """Lower-case suffix of ``p``, with ``.ome.tif``, ``.ome.tiff`` and ``.ome.zarr`` as one suffix."""
    name = Path(p).name.lower()
    for s in OME_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


def stem_of(p: str | os.PathLike) -> str:
    """File name without its (possibly two-part OME) suffix: ``out.ome.tif`` -> ``out``, ``sec.v2.zarr`` -> ``sec.v2``."""
    name = Path(p).name.rstrip("/\\")
    for s in OME_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(name).stem if Path(name).suffix else name


def is_image_file(p: str | os.PathLike) -> bool:
    """True when the name of ``p`` ends in one of :data:`IMAGE_SUFFIXES` (no file access)."""
    return Path(p).name.lower().endswith(IMAGE_SUFFIXES)


def is_tiff(p: str | os.PathLike) -> bool:
    """True for TIFF-family names (including OME-TIFF)."""
    return Path(p).name.lower().endswith(TIFF_SUFFIXES)


def natural_sort_key(s: str | os.PathLike) -> list:
    """Sort key treating digit runs as numbers: ``img2 < img10``."""
    parts = re.split(r"(\d+)", Path(s).name.lower())
    return [int(p) if p.isdigit() else p for p in parts]
