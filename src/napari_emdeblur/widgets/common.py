"""Small helpers shared by the docks: layer lookup, notifications, viewer callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

if TYPE_CHECKING:  # pragma: no cover
    import napari

HEATMAP_KEY = "emdeblur_heatmap"  # layer.metadata key marking our heatmap layers
DECISIONS_KEY = "emdeblur_decisions"  # layer.metadata key marking the flagged-tiles layer


def image_layers(viewer: "napari.Viewer", exclude_ours: bool = True) -> list:
    from napari.layers import Image

    out = []
    for layer in viewer.layers:
        if not isinstance(layer, Image):
            continue
        if exclude_ours and (HEATMAP_KEY in layer.metadata or DECISIONS_KEY in layer.metadata):
            continue
        out.append(layer)
    return out


def layer_by_name(viewer: "napari.Viewer", name: str | None):
    if not name:
        return None
    try:
        return viewer.layers[name]
    except (KeyError, ValueError):
        return None


def grayscale_data(layer) -> Any:
    """The layer's data as a 2-D or 3-D grayscale array, or raise ValueError with a clear message."""
    if getattr(layer, "rgb", False):
        raise ValueError(
            f"layer '{layer.name}' is RGB; EM focus scoring needs a single-channel image "
            "(convert it to grayscale first)"
        )
    if getattr(layer, "multiscale", False):
        data = layer.data[0]
    else:
        data = layer.data
    if data.ndim not in (2, 3):
        raise ValueError(f"layer '{layer.name}' has {data.ndim} dimensions; expected 2-D (y, x) or 3-D (z, y, x)")
    kind = np.dtype(data.dtype).kind
    if kind not in "uif":
        raise ValueError(f"layer '{layer.name}' has unsupported dtype {data.dtype}")
    return data


def notify(message: str, level: str = "info") -> None:
    {"info": show_info, "warning": show_warning, "error": show_error}.get(level, show_info)(message)


def tie_to_viewer(widget, viewer, *, layers_changed=None, mouse_move=None, mouse_drag=None) -> None:
    """Connect a dock widget's callbacks to the viewer, and disconnect them when the widget's Qt
    object is destroyed (a closed dock must not keep receiving mouse moves or layer events).
    """
    if layers_changed is not None:
        viewer.layers.events.inserted.connect(layers_changed)
        viewer.layers.events.removed.connect(layers_changed)
    if mouse_move is not None:
        viewer.mouse_move_callbacks.append(mouse_move)
    if mouse_drag is not None:
        viewer.mouse_drag_callbacks.append(mouse_drag)

    def _untie(*_):
        try:
            if layers_changed is not None:
                viewer.layers.events.inserted.disconnect(layers_changed)
                viewer.layers.events.removed.disconnect(layers_changed)
            for lst, cb in ((viewer.mouse_move_callbacks, mouse_move), (viewer.mouse_drag_callbacks, mouse_drag)):
                if cb is not None and cb in lst:
                    lst.remove(cb)
        except (AttributeError, RuntimeError):  # the viewer was closed first: nothing left to untie
            pass

    widget.native.destroyed.connect(_untie)
