"""Deblurring models (GRAN, U-Net baseline), weights + model cards, tiled inference, training.

Importing this package does not import torch; import the submodules you need::

    from napari_emdeblur.model.weights import load_model
    from napari_emdeblur.model.infer import InferenceParams, correct_image, iter_correct_tiles
"""
