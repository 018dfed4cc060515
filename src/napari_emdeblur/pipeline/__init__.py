"""Headless acquisition pipeline: ``emdeblur watch`` and ``emdeblur batch`` (no Qt, no napari).

* :mod:`.config`: :class:`PipelineConfig`, :class:`TileRecord`, output naming and settings.
* :mod:`.discover`: which files under an input folder are complete tiles, and their sections.
* :mod:`.process`: :func:`process_tile` (score, decide, correct one tile through the correction
  service); :mod:`.errors`: permanent vs transient failures.
* :mod:`.journal`: SQLite journal of an output folder, exactly-once processing, crash recovery.
* :mod:`.session`: one run over an output folder (journal, thresholds, tile threads, reports).
* :mod:`.watch`: the polling :func:`watch` generator; :mod:`.batch`: the same over a Dask cluster.
* :mod:`.report`: per-section CSV/JSON/QC PNG and ``index.html``, rebuilt from the journal.

See ``docs/pipeline.md``.
"""

from .config import PipelineConfig, TileRecord
from .process import process_tile

__all__ = ["PipelineConfig", "TileRecord", "process_tile"]
