"""Export of a reviewed correction: the corrected layer and its per-tile reports, atomically.

A mixin of :class:`~.correct.CorrectionWidget`. Every target is checked before anything is
written; the input file is never a target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._writer import write_layer
from ..deblur.reports import report_paths, write_reports
from .common import layer_by_name, notify

__all__ = ["ExportMixin"]


class ExportMixin:
    """``export`` of :class:`~.correct.CorrectionWidget` (uses its state)."""

    def export(self, path: str | Path | None = None, overwrite: bool = False) -> Path | None:
        """Write the corrected layer (.tif / .ome.tif / .zarr) and, if asked, ``<name>_report.csv``
        and ``.json`` next to it. Every target is checked before anything is written; the input file
        is never a target; each file is written atomically.
        """
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
        _, meta, _ = corrected.as_layer_data_tuple()
        meta = dict(meta, metadata=dict(meta.get("metadata") or {}))
        meta["metadata"]["reports"] = len(self.reports)
        try:
            data = self._store.levels[0] if self._store is not None else corrected.data
            write_layer(path, np.asarray(data), meta, overwrite=overwrite)
            if self.export_report.value:
                write_reports(path, list(self.reports.values()),
                              corrected.metadata.get("emdeblur_correction", {}), overwrite=overwrite)
        except (OSError, ValueError) as e:
            notify(f"Export failed: {e}", "error")
            return None
        notify(f"Exported {path}")
        return path
