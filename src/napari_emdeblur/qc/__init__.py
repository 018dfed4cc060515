"""Focus quality control (numpy/scipy; no torch, Qt or napari).

* :mod:`.messages`: the typed messages long-running generators yield, and :func:`~.messages.drain`;
* :mod:`.tiling`: regular tile grids and their placement in napari;
* :mod:`.focus`: per-tile focus metrics (the one registry; default ``blur``);
* :mod:`.spectral`: the shared spectral front end (one windowed FFT per tile) under :mod:`.psf`
  (per-tile PSF and noise: the total blur the correction uses) and :mod:`.blurmap` (the QC blur
  map: excess blur in px from the learned layer :mod:`.excess`, with shipped numpy weights, and the
  content check :mod:`.content`);
* :mod:`.thresholds`: the one threshold policy (px of blur, absolute, section-relative,
  calibrated); :mod:`.decisions`: OK / CORRECT / RETAKE / EMPTY and the QC CSV report;
  :mod:`.scoring`: scoring a section or stack as a generator.
"""
