"""napari sample data: a real ssTEM section with five synthetically defocused tiles.

The files live in ``napari_emdeblur/data/sample`` (built by ``scripts/make_sample.py``; licence
CC BY-NC-SA 3.0, see ``LICENSE.md`` there). ``sample_tiles.json`` says which tiles are blurred,
with which degradation and how strongly.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"


def sample_paths() -> dict[str, Path]:
    """Paths of the bundled sample files: ``section``, ``ground_truth``, ``tiles`` (json), ``license``."""
    return {
        "section": SAMPLE_DIR / "sample_section.tif",
        "ground_truth": SAMPLE_DIR / "sample_ground_truth.tif",
        "tiles": SAMPLE_DIR / "sample_tiles.json",
        "license": SAMPLE_DIR / "LICENSE.md",
    }


def sample_tiles() -> dict:
    """The parsed ``sample_tiles.json`` (tile size, blurred tiles and their degradations)."""
    return json.loads(sample_paths()["tiles"].read_text(encoding="utf-8"))


def make_sample_data() -> list[tuple]:
    """Layer data tuples: the soft section and its ground truth (hidden), both with 4.6 nm scale."""
    from .io.read import load_section

    paths = sample_paths()
    tiles = sample_tiles()
    license_text = paths["license"].read_text(encoding="utf-8")
    layers = []
    for key, name in (("section", "EM section (sample)"), ("ground_truth", "ground truth (sample)")):
        sec = load_section(paths[key])
        ps = sec.pixel_size or tuple(tiles["pixel_size_nm"])
        meta = {
            "emdeblur_source": str(paths[key]),
            "pixel_size": list(ps),
            "axes": sec.axes,
            "sample": True,
            "sample_role": key,
            "sample_tiles": tiles,
            "license": license_text,
            "attribution": "S. Gerhard, J. Funke, J. Martel, A. Cardona, R. Fetter (2013), "
                           "doi:10.6084/m9.figshare.856713, CC BY-NC-SA 3.0",
            "warnings": list(sec.metadata.get("warnings", [])),
        }
        kwargs = {"name": name, "scale": tuple(ps), "metadata": meta,
                  "contrast_limits": (0, 255), "visible": key == "section"}
        layers.append((sec.data, kwargs, "image"))
    return layers
