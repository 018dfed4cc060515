"""Deblurring (the torch layer): networks, weights and model cards, tiled inference, the correction
service, training.

Importing this package, :mod:`.service`, :mod:`.remote`, :mod:`.selection`, :mod:`.reports`,
:mod:`.metrics`, :mod:`.fidelity` or :mod:`.shipped` does not import torch; the others do.

* :mod:`.nets`: GRAN, the semi-blind GRAN (+ Wiener candidates) and the U-Net baseline;
* :mod:`.weights`: weights + JSON model card (save / load / check); :mod:`.shipped`: where the
  shipped weights live; :mod:`.cache`: the one model cache; :mod:`.device`: the one device resolver;
* :mod:`.infer`: tiled inference of whole images or some boxes, with bounded memory;
* :mod:`.service`: ``iter_correct(image, selection, params)``, the one correction flow;
  :mod:`.remote`: the same flow in a spawned child process (GUIs: torch never loads in their process);
  :mod:`.selection`, :mod:`.fidelity`, :mod:`.metrics`, :mod:`.reports`: its parts;
* :mod:`.train`: training data, degradation models and the training loop.
"""
