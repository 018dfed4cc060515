"""Pure (Qt-free) core of napari-emdeblur: io, tiling, focus metrics, degradation models."""
