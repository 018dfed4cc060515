"""The package's layers import downward only, and no private name crosses a module boundary.

Every module of ``src/napari_emdeblur`` is parsed (ast, nothing is imported) and each of its
import statements, also those inside functions, is checked against the layer rules of the
README's *Architecture* section:

    io, qc (numpy/scipy)  <-  deblur (torch)  <-  pipeline, cli, widgets, npe2 reader/writer/sample
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "napari_emdeblur"
SRC = Path(__file__).resolve().parents[1] / "src" / PKG

# which first-level parts of the package each part may import (itself included)
ALLOWED = {
    "io": {"io"},
    "qc": {"io", "qc"},
    "deblur": {"io", "qc", "deblur"},
    "pipeline": {"io", "qc", "deblur", "pipeline"},
    "cli": {"io", "qc", "deblur", "pipeline", "cli", "_sample_data", ""},
    "widgets": {"io", "qc", "deblur", "widgets", "_writer", "_reader"},  # _reader.redraw; never the reverse
    "_reader": {"io", "qc", "_reader"},
    "_writer": {"io", "_writer"},
    "_sample_data": {"io", "_sample_data"},
    "": {"io", "qc", "deblur", "pipeline", ""},  # the package __init__ (lazy names)
}
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")
# modules of the torch layer that the GUI thread may import: they must not import torch at import time
TORCH_FREE = {"deblur", "deblur.service", "deblur.remote", "deblur.selection", "deblur.reports", "deblur.metrics",
              "deblur.fidelity", "deblur.shipped", "deblur.nets", "deblur.train", "deblur.train.degrade"}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts), path, path.name == "__init__.py"


def _imports(name: str, path: Path, is_pkg: bool):
    """``(imported module, names, lineno, top_level)`` of every import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    base = (PKG + "." + name).rstrip(".").split(".")
    if not is_pkg:
        base = base[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, [a.name for a in node.names], node.lineno, id(node) in top


def _part(mod: str) -> str | None:
    """First-level part of the package an absolute module name belongs to ('' = the package)."""
    if mod == PKG:
        return ""
    if mod.startswith(PKG + "."):
        return mod.split(".")[1]
    return None


MODULES = list(_modules())


def test_every_module_is_checked():
    names = {m for m, _, _ in MODULES}
    assert {"io.read", "qc.scoring", "deblur.service", "pipeline.batch", "cli.correct", "widgets.runner"} <= names
    assert not any(n.startswith(("core", "model")) for n in names), "the old core/model packages are back"


@pytest.mark.parametrize("name,path,is_pkg", MODULES, ids=[m for m, _, _ in MODULES])
def test_imports_point_downward(name, path, is_pkg):
    own = name.split(".")[0] if name else ""
    bad = []
    for mod, names, line, top in _imports(name, path, is_pkg):
        part = _part(mod)
        where = f"{path.relative_to(SRC.parent)}:{line} imports {mod}"
        if part is not None:
            if part not in ALLOWED[own]:
                bad.append(f"{where}: {own or 'the package'} may not import {part or 'the package'}")
            if part == "" and set(names) - {"__version__"} and own:
                bad.append(f"{where}: import from the submodule, not the package")
            own_mod = f"{PKG}.{name}".rstrip(".")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and mod != own_mod:
                bad.append(f"{where}: private name(s) {private} from another module")
            continue
        root = mod.split(".")[0]
        if own in ("io", "qc") and root in ("torch",) + GUI:
            bad.append(f"{where}: {own} is numpy/scipy only")
        if own in ("deblur", "pipeline") and root in GUI:
            bad.append(f"{where}: no Qt/napari below the GUI")
        if own == "cli" and root in GUI and name != "cli.demo":
            bad.append(f"{where}: only `emdeblur demo` opens napari")
        if root == "torch" and top and (name in TORCH_FREE or own in ("widgets", "pipeline", "cli", "_reader",
                                                                         "_writer", "_sample_data", "")):
            bad.append(f"{where}: torch at import time")
    assert not bad, "\n".join(bad)


def test_gui_never_imports_the_torch_layer_at_import_time():
    torch_modules = {m for m, p, k in MODULES if m.startswith("deblur") and m not in TORCH_FREE}
    bad = []
    for name, path, is_pkg in MODULES:
        if name.split(".")[0] not in ("widgets", "_reader", "_writer", "_sample_data", ""):
            continue
        for mod, _names, line, top in _imports(name, path, is_pkg):
            if top and mod.startswith(PKG + ".") and mod[len(PKG) + 1:] in torch_modules:
                bad.append(f"{path.name}:{line} imports {mod} at import time")
    assert not bad, "\n".join(bad)
