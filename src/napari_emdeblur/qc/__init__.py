"""Focus quality control (numpy/scipy; no torch, Qt or napari).

* :mod:`.messages`: the typed messages long-running generators yield, and :func:`~.messages.drain`;
* :mod:`.tiling`: regular tile grids and their placement in napari;
* :mod:`.focus`: per-tile focus metrics; :mod:`.blur` / :mod:`.psf`: per-tile blur estimates;
* :mod:`.thresholds`: the one threshold policy; :mod:`.decisions`: OK / CORRECT / RETAKE and the
  QC CSV report; :mod:`.scoring`: scoring a section or stack as a generator.
"""
