"""napari dock widgets (Qt), thin shells over the core services; torch is never imported here.

* :mod:`.runner`: the one worker wiring both docks use (thread or synchronous; stops on close);
* :mod:`.qc`: the Focus QC dock; :mod:`.correct`: the GRAN correction dock, with its tile choice
  (:mod:`.selection`), review (:mod:`.review`) and export (:mod:`.export`), and the corrected layer's
  store and throttled refresh (:mod:`.corrected`);
* :mod:`.view`: what the proofreader sees (legend, colour bars, tint by zoom, layer order, grid);
* :mod:`.pauses`: the UI-pause probe of tests and benchmarks;
* :mod:`.common`: layer lookup, notifications, viewer callbacks.
"""
