"""napari dock widgets (Qt), thin shells over the core services; torch is never imported here.

* :mod:`.runner`: the one worker wiring both docks use (thread or synchronous; stops on close);
* :mod:`.qc`: the Focus QC dock; :mod:`.correct`: the GRAN correction dock, with its tile choice
  (:mod:`.selection`), review (:mod:`.review`) and export (:mod:`.export`);
* :mod:`.common`: layer lookup, notifications, viewer callbacks.
"""
