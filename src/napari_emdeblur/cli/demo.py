"""``emdeblur demo``: open napari with the bundled sample section and the plugin's widgets docked.

``--screenshot PATH`` runs the same flow (score, suggest thresholds, optionally ``--correct``),
saves a screenshot of the whole window and exits; it works headless under Xvfb and is what
makes the pictures in docs/.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari on the bundled sample section with the widgets docked")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window and exit")
    p.add_argument("--correct", action="store_true", help="also correct the flagged tiles (CPU is fine)")
    p.add_argument("--view", choices=("overlay", "grid"), default="overlay",
                   help="after --correct: show the layers overlaid or side by side")
    p.add_argument("--size", default="1600x1000", help="window size WxH for screenshots")
    p.add_argument("--overwrite", action="store_true", help="replace an existing screenshot file")
    p.set_defaults(func=run)


def build_demo(viewer, correct: bool = False, view: str = "overlay"):
    """Load the sample, dock the widgets, score (synchronously), optionally correct. Returns widgets."""
    from .._sample_data import make_sample_data

    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    section = viewer.layers[0]
    gt = viewer.layers[1] if len(viewer.layers) > 1 else None
    if gt is not None:
        gt.visible = False
    qc_dock, qc = viewer.window.add_plugin_dock_widget("napari-emdeblur", "Focus QC")
    cw_dock, cw = viewer.window.add_plugin_dock_widget("napari-emdeblur", "GRAN correction", tabify=True)
    qc.layer_combo.value = section.name
    qc.run(sync=True)
    if correct:
        cw.layer_combo.value = section.name
        if gt is not None:
            cw.gt_combo.value = gt.name
        cw.run(sync=True)
        if view == "grid":
            cw.toggle_view()
    viewer.layers.selection.active = section
    viewer.reset_view()
    return qc, cw, (cw_dock if correct else qc_dock)


def run(args) -> int:
    from . import CLIError

    shot = Path(args.screenshot) if args.screenshot else None
    if shot is not None:
        if shot.exists() and not args.overwrite:
            raise CLIError(f"{shot} already exists (use --overwrite)")
        if not shot.parent.exists():
            raise CLIError(f"folder {shot.parent} does not exist")
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-emdeblur demo", show=True)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError as e:
        raise CLIError(f"--size must look like 1600x1000, got {args.size!r}") from e
    viewer.window.resize(w, h)
    _, _, front = build_demo(viewer, correct=args.correct, view=args.view)
    for _ in range(5):
        QApplication.processEvents()
    front.raise_()
    if shot is None:
        napari.run()
        return 0
    for _ in range(20):
        QApplication.processEvents()
    tmp = shot.with_name(f".{shot.name}.tmp.png")
    viewer.screenshot(str(tmp), canvas_only=False, flash=False)
    os.replace(tmp, shot)
    print(f"screenshot saved to {shot}")
    viewer.close()
    return 0
