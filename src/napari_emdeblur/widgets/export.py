"""Export of a reviewed correction: the corrected layer and its per-tile reports, atomically.

A mixin of :class:`~.correct.CorrectionWidget`. Every target is checked before anything is
written; the input file is never a target. The checks run at once; the writing (which reads the
corrected layer block by block: a whole section may be far larger than memory) runs in a worker
thread from the dock's button, or in the calling thread with ``sync=True`` (scripts, tests).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Generator

from .._writer import write_layer
from ..deblur.reports import report_paths, write_reports
from ..qc.messages import Progress
from .common import layer_by_name, notify
from .runner import WorkerRunner

__all__ = ["ExportMixin"]


class ExportMixin:
    """``export`` of :class:`~.correct.CorrectionWidget` (uses its state)."""

    _export_runner: WorkerRunner | None = None
    _export_target: Path | None = None
    _export_ok = False

    def export(self, path: str | Path | None = None, overwrite: bool = False, sync: bool = True) -> Path | None:
        """Write the corrected layer (.tif / .ome.tif / .zarr) and, if asked, ``<name>_report.csv``
        and ``.json`` next to it. Every target is checked before anything is written; the input file
        is never a target; each file is written atomically. ``sync=False`` (the Export button)
        writes in a worker thread and returns None at once (a notification says when it is done).
        Returns the path written (``sync``), or None when nothing was (or is being) written.
        """
        if self._runner.running:
            notify("A correction is running: export when it has finished (or cancel it)", "warning")
            return None
        if self._export_runner is not None and self._export_runner.running:
            notify("An export is already running", "warning")
            return None
        corrected = self.corrected_layer
        if corrected is None:
            notify("Nothing to export: run a correction first", "warning")
            return None
        path = Path(path or self.export_path.value)
        if str(path) in ("", ".") or (path.is_dir() and not path.name.endswith(".zarr")):
            notify("Choose a file to export to (.tif, .ome.tif or .zarr)", "warning")
            return None
        targets = [path] + (list(report_paths(path)) if self.export_report.value else [])
        src = layer_by_name(self._viewer, self.source_name)
        protected = {str(p) for p in (getattr(getattr(src, "source", None), "path", None),
                                      corrected.metadata.get("emdeblur_source")) if p}
        if any(Path(p).resolve() == t.resolve() for p in protected for t in targets):
            notify("Not written: that is the input file; choose another name", "error")
            return None
        existing = [t for t in targets if t.exists()]
        if existing and not overwrite:
            notify(f"Already exists, not overwritten: {existing[0].name} (in {existing[0].parent})", "error")
            return None
        # what is shown now, frozen: reviewing on (accept / revert / retake) while the export is written
        # must not change it half way (the image and its reports would disagree)
        _, meta, _ = corrected.as_layer_data_tuple()
        meta = copy.deepcopy(meta)
        meta["metadata"] = dict(meta.get("metadata") or {}, reports=len(self.reports))
        info = meta["metadata"].get("emdeblur_correction", {})
        data = self._store.snapshot().levels[0] if self._store is not None else corrected.data  # lazy: never read here
        reports = [replace(r) for r in self.reports.values()] if self.export_report.value else None
        if self._export_runner is None:
            self._export_runner = WorkerRunner(self, lambda msg: None, self._export_failed, self._export_finished,
                                               self._export_busy)
        self._export_target, self._export_ok = path, False
        self._export_runner.start(_export_job(path, data, meta, overwrite, reports, info), sync=sync)
        return path if sync and self._export_ok else None

    def _export_failed(self, e: BaseException) -> None:
        notify(f"Export failed: {e}", "error")

    def _export_finished(self) -> None:
        self._export_ok = True
        notify(f"Exported {self._export_target}")

    def _export_busy(self, busy: bool) -> None:
        self.export_btn.enabled = not busy
        self.export_btn.text = "Exporting..." if busy else "Export"


def _export_job(path: Path, data: Any, meta: dict, overwrite: bool, reports: list | None,
                info: dict) -> Generator[Progress, None, Path]:
    """Write the layer's data (read block by block by the writer), then the reports, with no stop
    between them (a dock closed meanwhile must not leave an image without its reports).
    """
    yield Progress(0, 1, "export")
    write_layer(path, data, meta, overwrite=overwrite)
    if reports is not None:
        write_reports(path, reports, info, overwrite=overwrite)
    return path
