"""``python -m napari_emdeblur.cli``: the ``emdeblur`` command."""

import sys

from . import main

sys.exit(main())
