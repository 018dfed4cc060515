"""Per-tile correction reports: one row per corrected QC tile, written as CSV + JSON (numpy only)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..io.atomic import atomic_write_text
from ..io.formats import stem_of
from ..io.section import json_safe

__all__ = ["CorrectionReport", "TileReport", "report_paths", "write_reports"]


@dataclass
class TileReport:
    """One row of the per-tile report."""

    section: int
    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int
    score_before: float = math.nan
    score_after: float = math.nan
    decision: str = "ok"
    corrected: bool = False
    accepted: bool | None = None  # None = not reviewed, True accepted, False rejected
    retake: bool = False
    blur_major: float = math.nan  # estimated blur of the original (qc.psf), px along the major axis
    blur_minor: float = math.nan  # px along the minor axis
    blur_angle: float = math.nan  # major axis, degrees from +x towards +y
    noise: float = math.nan  # noise sigma of the original, [0, 1] units of the value range
    fidelity_ratio: float = math.nan
    check_by_eye: bool = False
    psnr_before: float = math.nan
    psnr_after: float = math.nan
    ssim_before: float = math.nan
    ssim_after: float = math.nan

    @classmethod
    def from_dict(cls, d: dict) -> "TileReport":
        """A report from a dict that may hold other keys too (e.g. ``TileResult.info``)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class CorrectionReport:
    """What a correction run did: one :class:`TileReport` per corrected tile and the run's settings.

    The correction service yields it as its last message.
    """

    tiles: list[TileReport] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """The tile reports as dicts (the JSON report's ``tiles``)."""
        return [asdict(r) for r in self.tiles]


def report_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>_report.csv, <stem>_report.json)`` beside an output image (``out.ome.tif`` -> ``out_report.*``)."""
    output = Path(output)
    stem = output.parent / (stem_of(output.name) + "_report")
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")


def write_reports(output: str | os.PathLike, reports: Sequence[TileReport], meta: dict | None = None,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write the CSV and JSON reports of an output image (:func:`report_paths`), atomically.

    Parameters
    ----------
    output : path
        The corrected image the reports belong to.
    reports : sequence of TileReport
        One row per tile (scores before/after, decision, review, fidelity, PSNR/SSIM).
    meta : dict, optional
        Run settings, stored as the JSON report's ``meta``.
    overwrite : bool
        Replace existing report files (else ``FileExistsError``, checked before writing).
    """
    csv_path, json_path = report_paths(output)
    for p in (csv_path, json_path):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} already exists")
    cols = list(TileReport.__dataclass_fields__)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in reports:
        w.writerow({k: ("" if v is None else v) for k, v in json_safe(asdict(r)).items()})  # missing: empty
    doc = json_safe({"meta": meta or {}, "tiles": [asdict(r) for r in reports]})  # missing: null
    atomic_write_text(csv_path, buf.getvalue(), overwrite=overwrite)
    atomic_write_text(json_path, json.dumps(doc, indent=1, allow_nan=False), overwrite=overwrite)
    return csv_path, json_path
