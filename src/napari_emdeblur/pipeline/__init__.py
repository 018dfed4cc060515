"""Headless acquisition pipeline: ``emdeblur watch`` and ``emdeblur batch`` (no Qt, no napari).

* :mod:`.journal`: SQLite journal of an output folder, exactly-once processing, crash recovery.
* :mod:`.process`: :class:`PipelineConfig`, :func:`process_tile` (score, decide, correct one tile).
* :mod:`.watch`: discovery of complete tiles and the polling :func:`watch` generator.
* :mod:`.batch`: the same over a Dask cluster (:func:`batch`).
* :mod:`.report`: per-section CSV/JSON/QC PNG and ``index.html``, rebuilt from the journal.

See ``docs/pipeline.md``.
"""

from .process import DEFAULT_THRESHOLDS, PipelineConfig, TileRecord, process_tile

__all__ = ["DEFAULT_THRESHOLDS", "PipelineConfig", "TileRecord", "process_tile"]
