"""napari widgets (Qt). Thin layer over ``napari_emdeblur.core``; torch is imported lazily."""
