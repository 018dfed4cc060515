"""napari-emdeblur: focus QC and GRAN deblurring for electron-microscopy sections.

The pure core (``napari_emdeblur.core`` and ``napari_emdeblur.model``) imports no Qt and
can be used headless; the napari layer (``widgets``, ``_reader``, ``_writer``,
``_sample_data``) is thin on top of it.
"""

__version__ = "0.1.0"
