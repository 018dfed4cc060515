"""Small helpers shared by the docks: layer lookup, notifications, viewer callbacks."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

if TYPE_CHECKING:  # pragma: no cover
    import napari

HEATMAP_KEY = "emdeblur_heatmap"  # layer.metadata key marking our heatmap layers
DECISIONS_KEY = "emdeblur_decisions"  # layer.metadata key marking the flagged-tiles layer
REVIEW_KEY = "emdeblur_review"  # layer.metadata key of the correction's review-marks layer
# our display layers (never offered as an image to score, correct or use as ground truth)
DISPLAY_KEYS = (HEATMAP_KEY, DECISIONS_KEY, REVIEW_KEY)
# the flag colours (RGB) of both docks and the legend: 1 = correct (deblur), 2 = retake (re-image)
FLAG_COLORS = {1: (0.0, 0.9, 1.0), 2: (1.0, 0.1, 0.1)}


def image_layers(viewer: "napari.Viewer", exclude_ours: bool = True) -> list:
    from napari.layers import Image

    out = []
    for layer in viewer.layers:
        if not isinstance(layer, Image):
            continue
        if exclude_ours and any(k in layer.metadata for k in DISPLAY_KEYS):
            continue
        out.append(layer)
    return out


def code_colormap(colors: list, name: str):
    """A colormap for integer codes ``0 .. len(colors) - 1`` shown with contrast limits
    ``(-0.5, len(colors) - 0.5)``: one RGBA colour per code, no blending between codes (the QC
    flags (filled or outlined) and the review marks are Image layers drawn through one of these: no
    Labels layer with its paint tools and polygon overlay to set up).
    """
    from napari.utils.colormaps import Colormap

    n = len(colors)
    return Colormap(list(colors), controls=[k / n for k in range(n + 1)], interpolation="zero", name=name)


def code_limits(n: int) -> tuple[float, float]:
    """The contrast limits that go with :func:`code_colormap` of ``n`` codes."""
    return (-0.5, n - 0.5)


def plain_viewer(viewer: Any) -> Any:
    """The viewer itself when napari hands a dock widget a proxy of it.

    A dock made from the plugin menu gets the viewer wrapped in napari's public-only proxy, whose
    attribute and item access return a *new* proxy object each time (``viewer.layers[name]``,
    ``viewer.add_image(...)``), while iterating ``viewer.layers`` gives the layers themselves. The
    docks compare layers by identity (set-up steps for a layer still in the viewer, layer order,
    weakly held marks) and share one review view per viewer, so they work on the viewer itself
    (``__wrapped__``, the proxy library's public handle on what it wraps). The package uses napari's
    public API only, with or without the proxy.
    """
    return getattr(viewer, "__wrapped__", viewer)


def layer_by_name(viewer: "napari.Viewer", name: str | None):
    if not name:
        return None
    try:
        return viewer.layers[name]
    except (KeyError, ValueError):
        return None


_MADE: "weakref.WeakSet[Any]" = weakref.WeakSet()  # the layers the docks made (in this process)


def made_here(layer: Any) -> Any:
    """Mark ``layer`` as one the plugin's docks made (and may replace or remove); returns it."""
    _MADE.add(layer)
    return layer


def plugin_layer(viewer: "napari.Viewer", name: str | None):
    """The layer called ``name`` if the plugin's docks made it, else None: a layer of the user's
    that happens to have the name is never taken for ours (nor replaced, nor removed).
    """
    layer = layer_by_name(viewer, name)
    return layer if layer is not None and layer in _MADE else None


def name_in_the_way(viewer: "napari.Viewer", names: list[str]) -> str | None:
    """An error line when one of ``names`` (the layers a run is about to make) is taken by a layer
    the plugin did not make, else None.
    """
    for name in names:
        layer = layer_by_name(viewer, name)
        if layer is not None and layer not in _MADE:
            return (f"a layer named '{name}' is in the way: the plugin puts its own layer under that name; "
                    "rename or remove that layer and run again")
    return None


def placement(layer: Any) -> dict[str, Any]:
    """``layer``'s data-to-world transform as ``add_*`` keyword arguments (scale, translate, rotate,
    shear, affine): layers drawn over an image line up with it also when it is rotated or sheared.
    """
    return {"scale": tuple(float(v) for v in layer.scale), "translate": tuple(float(v) for v in layer.translate),
            "rotate": np.array(layer.rotate, float), "shear": np.array(layer.shear, float),
            "affine": np.array(layer.affine.affine_matrix, float)}


def place_like(layer: Any, place: dict[str, Any]) -> None:
    """Give ``layer`` the transform :func:`placement` took from another (only what differs: each
    change re-slices the layer).
    """
    now = placement(layer)
    for key, value in place.items():
        if np.shape(now[key]) != np.shape(value) or not np.allclose(now[key], value):
            setattr(layer, key, value)


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
    """A napari notification. Put the essential words first and keep it short (a pop-up shows
    about the first 80 characters): "Already exists: out.tif", not "/long/path/out.tif already exists".
    """
    {"info": show_info, "warning": show_warning, "error": show_error}.get(level, show_info)(message)


def layer_to_run(viewer: "napari.Viewer", running: bool, name: str | None, busy: str, missing: str):
    """The image layer a dock's run should use, or None after a warning notification: ``busy`` when a
    run of that dock is still going on, ``missing`` when no layer is called ``name``.
    """
    if running:
        notify(busy, "warning")
        return None
    layer = layer_by_name(viewer, name)
    if layer is None:
        notify(missing, "warning")
    return layer


def compact(label: Any) -> Any:
    """Let a magicgui ``Label`` wrap instead of widening its dock (long device names, statuses)."""
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setMinimumWidth(40)
    return label


def preselect(combo: Any, viewer: "napari.Viewer") -> None:
    """Choose an image in an empty ``combo``: the active layer if it is a visible choice, else the
    first visible choice, else the first choice.
    """
    if combo.value is not None:
        return
    names = [c for c in combo.choices if c is not None]
    if not names:
        return
    visible = [n for n in names if n in viewer.layers and viewer.layers[n].visible]
    active = viewer.layers.selection.active
    if active is not None and active.name in visible:
        combo.value = active.name
    else:
        combo.value = (visible or names)[0]


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


def with_imports(gen: Any, *modules: str) -> Any:
    """``gen``'s messages, after importing ``modules`` in the thread that runs it (a worker): a
    module napari loads on first use of a layer type (pandas for the features of a Vectors layer:
    about 0.5 s) then costs the GUI thread nothing when the layer is added. Returns ``gen``'s value.
    """
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # napari then imports (or does without) it itself
            pass
    return (yield from gen)
