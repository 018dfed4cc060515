"""Training: :mod:`.degrade` (EM defocus / astigmatism / noise models, numpy), :mod:`.data`
(sharp tiles, augmentation, on-the-fly degradation) and :mod:`.loop` (the training generator).

Importing this package does not import torch.
"""
