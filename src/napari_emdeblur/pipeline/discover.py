"""Discovery of complete acquisition tiles under an input folder (no Qt, no journal).

Rules
-----
* Tiles are the image files of :data:`napari_emdeblur.io.formats.IMAGE_SUFFIXES` (the one format
  registry); hidden files and folders (``.name``) and the output folder are skipped.
* Sections. A folder holding ``full_image_coordinates.txt`` (MultiSEM) is a section; the files
  below it belong to it, and the coordinates give each tile's stage position (px) for the QC
  heatmap. MultiSEM mFOV folders (six-digit names such as ``000001``) belong to their parent
  folder's section, also before any coordinates file is written. Any other tile belongs to the
  section named after its folder (its path relative to ``DIR``; ``DIR``'s own name for tiles at
  the top).
* Completeness. A tile is picked up once any of these holds: a marker file ``<name>.done`` or
  ``<stem>.done`` sits next to it; it is listed in its section's coordinates file; or it is
  non-empty and its size and mtime have not changed for ``stable_seconds`` (judged by its mtime
  age or by two observations that far apart). Files still being written are left for later.
* Problems (never block, never hang). Only regular files are tiles: a pipe, device or link loop
  with an image name, a folder or file that cannot be listed or stat-ed, and a coordinates file
  that is not a regular file are reported at once (:attr:`ScanResult.bad`). What may still change
  while an acquisition runs is kept in :attr:`ScanResult.unfinished` and reported only when the run
  is final (``watch --once`` at its end, ``batch``): an empty tile unchanged for ``stable_seconds``,
  a coordinates file that cannot be parsed, tiles listed in a coordinates file that never arrived.
  Every message is one line naming the file.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io.errors import EMReadError, os_reason, user_message
from ..io.formats import IMAGE_SUFFIXES, is_image_file
from ..io.multisem import COORDS_NAME, parse_coordinates, tile_path
from .config import corrected_rel

MARKER_SUFFIX = ".done"
_MFOV_RE = re.compile(r"^\d{6}$")

__all__ = ["Candidate", "ScanResult", "Scanner", "candidates_for_inputs", "check_input_folder", "tile_positions"]


@dataclass(frozen=True)
class Candidate:
    """An input tile found on disk."""

    path: str  # absolute
    root: str  # the input root it was found under
    rel: str  # path relative to root (posix)
    section: str
    name: str  # path relative to the section folder (posix)
    size: int
    mtime_ns: int
    complete: bool = True

    @property
    def out_rel(self) -> str:
        return corrected_rel(self.section, self.name)


@dataclass
class ScanResult:
    complete: list[Candidate] = field(default_factory=list)
    waiting: list[Candidate] = field(default_factory=list)
    positions: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # changed only
    bad: dict[str, str] = field(default_factory=dict)  # path -> message: never a tile (report now)
    unfinished: dict[str, str] = field(default_factory=dict)  # path -> message: report when final


def tile_positions(path: str | os.PathLike) -> dict[str, tuple[float, float]] | None:
    """``{relative tile path (posix): (x, y)}`` from a MultiSEM ``full_image_coordinates.txt``
    (:func:`napari_emdeblur.io.multisem.parse_coordinates`), or None while it cannot be parsed
    (e.g. being written).
    """
    try:
        return _positions(parse_coordinates(path), Path(path).parent)
    except (EMReadError, OSError):
        return None


def _posix_rel(p: Path, base: Path) -> str:
    return p.relative_to(base).as_posix()


class Scanner:
    """Polls one input root; remembers what it saw to judge when files stop changing."""

    def __init__(self, root: str | os.PathLike, stable_seconds: float = 2.0, exclude: list | None = None):
        self.root = Path(root).resolve()
        self.stable_seconds = float(stable_seconds)
        self.exclude = {Path(p).resolve() for p in (exclude or [])}
        self._obs: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen so)
        self._coords_fp: dict[str, tuple[int, int]] = {}
        self._coords: dict[str, dict[str, tuple[float, float]]] = {}  # coords file -> entries
        self._coord_errors: dict[str, str] = {}  # coords file -> why it cannot be parsed (yet)

    def section_name(self, sec_dir: Path) -> str:
        rel = _posix_rel(sec_dir, self.root)
        return self.root.name if rel in ("", ".") else rel

    def _rel(self, p: Path) -> str:
        """``p`` relative to the watched folder (the watched folder itself by its path, not ".")."""
        try:
            rel = _posix_rel(p, self.root)
        except ValueError:
            return str(p)
        return str(self.root) if rel in ("", ".") else rel

    def scan(self, now: float | None = None) -> ScanResult:
        now = time.time() if now is None else now
        mono = time.monotonic()
        res = ScanResult()
        sec_of: dict[Path, tuple[Path, bool]] = {}  # dir -> (section dir, decided by coordinates)
        listed: dict[str, tuple[str, str]] = {}  # tile path -> (coordinates file, name listed)
        section_coords: dict[Path, list[tuple[int, Path]]] = {}
        files: list[tuple[Path, Path, os.stat_result, bool]] = []
        seen_paths: set[str] = set()
        found: set[str] = set()

        def walk_error(e: OSError) -> None:
            where = Path(e.filename) if e.filename else self.root
            res.bad[str(where)] = f"{self._rel(where)}: cannot read the folder ({os_reason(e)}); its tiles are skipped"

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=walk_error):
            d = Path(dirpath)
            dirnames[:] = sorted(
                n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in self.exclude
            )
            has_coords = COORDS_NAME in filenames
            parent = sec_of.get(d.parent) if d != self.root else None
            if parent is not None and parent[1]:
                sec = parent  # inside a coordinates-defined section
            else:  # MultiSEM mFOV folders belong to their parent's section
                base = d.parent if d != self.root and _MFOV_RE.match(d.name) else d
                sec = (base, has_coords)
            sec_of[d] = sec
            if has_coords:
                depth = len(d.relative_to(self.root).parts)
                section_coords.setdefault(sec[0], []).append((depth, d / COORDS_NAME))
            names = set(filenames)
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                p = d / fn
                if not is_image_file(p):
                    continue
                try:
                    st = p.stat()
                except OSError as e:
                    res.bad[str(p)] = f"{self._rel(p)}: cannot read the file ({os_reason(e)}), skipped"
                    continue
                if not stat.S_ISREG(st.st_mode):
                    res.bad[str(p)] = f"{self._rel(p)}: not a regular file (a pipe or device), skipped"
                    continue
                if not utf8_name(str(p)):  # the journal and the reports hold paths as UTF-8 text
                    res.bad[str(p)] = f"{self._rel(p)}: file or folder name is not valid UTF-8 (rename it), skipped"
                    continue
                found.add(str(p))
                marked = (fn + MARKER_SUFFIX) in names or (p.stem + MARKER_SUFFIX) in names
                files.append((p, sec[0], st, marked))

        # coordinates: deeper (mFOV) files first, so the section-level file wins
        for sec_dir, cfiles in section_coords.items():
            merged: dict[str, tuple[float, float]] = {}
            changed = False
            for _, cpath in sorted(cfiles, key=lambda t: (-t[0], str(t[1]))):
                key = str(cpath)
                try:
                    st = cpath.stat()
                except OSError as e:
                    res.bad[key] = f"{self._rel(cpath)}: cannot read the coordinates file ({os_reason(e)})"
                    continue
                if not stat.S_ISREG(st.st_mode):  # a pipe would block the reader forever
                    res.bad[key] = f"{self._rel(cpath)}: coordinates file is not a regular file (a pipe or device)"
                    continue
                fp = (st.st_size, st.st_mtime_ns)
                if self._coords_fp.get(key) != fp:
                    try:
                        parsed = _positions(parse_coordinates(cpath), cpath.parent)
                        self._coords_fp[key] = fp
                        self._coord_errors.pop(key, None)
                        changed = True
                    except (EMReadError, OSError) as e:  # being written, or broken: kept for the final report
                        parsed = self._coords.get(key, {})
                        self._coord_errors[key] = user_message(e)
                    self._coords[key] = parsed
                if key in self._coord_errors:
                    res.unfinished[key] = self._coord_errors[key]
                for name, xy in self._coords[key].items():
                    try:
                        rel = _posix_rel((cpath.parent / name).resolve(), sec_dir.resolve())
                    except ValueError:
                        continue
                    merged[rel] = xy
                    listed[str(sec_dir / rel)] = (key, name)
            if changed:
                res.positions[self.section_name(sec_dir)] = merged
        never: dict[str, list[str]] = {}
        for tile, (key, name) in listed.items():
            if tile not in found and tile not in res.bad:
                never.setdefault(key, []).append(name)
        for key, names in never.items():
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            res.unfinished[key + "#missing"] = (
                f"{self._rel(Path(key))}: {len(names)} tile(s) listed never arrived ({shown})"
            )

        for p, sec_dir, st, marked in files:
            key = str(p)
            seen_paths.add(key)
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._obs.get(key)
            if prev is None or prev[:2] != sig:
                self._obs[key] = (sig[0], sig[1], mono)
                first = mono
            else:
                first = prev[2]
            complete = marked or key in listed
            stable = (now - st.st_mtime_ns / 1e9) >= self.stable_seconds or (mono - first) >= self.stable_seconds
            if not complete and st.st_size > 0:
                complete = stable
            cand = Candidate(
                path=key,
                root=str(self.root),
                rel=_posix_rel(p, self.root),
                section=self.section_name(sec_dir),
                name=_posix_rel(p, sec_dir),
                size=int(st.st_size),
                mtime_ns=int(st.st_mtime_ns),
                complete=complete,
            )
            if not complete and st.st_size == 0 and stable:  # empty and not changing: not a tile yet
                res.unfinished[key] = f"{cand.rel}: empty file (0 bytes), skipped"
                continue
            (res.complete if complete else res.waiting).append(cand)
        for key in list(self._obs):
            if key not in seen_paths:
                del self._obs[key]
        return res


def _positions(rows, folder: Path) -> dict[str, tuple[float, float]]:
    """``{tile path relative to folder (posix): (x, y)}``; entries are resolved as the reader
    resolves them (:func:`napari_emdeblur.io.multisem.tile_path`); those outside ``folder`` are left out.
    """
    out: dict[str, tuple[float, float]] = {}
    base = folder.resolve()
    for name, x, y, _z in rows:
        if math.isfinite(x) and math.isfinite(y):
            try:
                rel = _posix_rel(tile_path(folder, name).resolve(), base)
            except (ValueError, OSError, RuntimeError):
                continue
            if utf8_name(rel):  # the others are reported and skipped as files
                out[rel] = (float(x), float(y))
    return out


def utf8_name(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 (no undecodable bytes from the file system)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_input_folder(folder: str | os.PathLike) -> Path:
    """``folder`` resolved, when it is a folder whose entries can be listed and read; else an
    ``OSError`` / ``FileNotFoundError`` naming it (checked before an output folder is created).
    """
    p = Path(folder)
    if not p.exists():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    if not utf8_name(str(p.resolve())):
        raise ValueError(f"input folder {folder}: its name is not valid UTF-8 (rename it)")
    if not p.is_dir():
        raise NotADirectoryError(f"input folder {folder} is not a folder")
    try:
        with os.scandir(p) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)  # needs search permission on the folder
                break
    except OSError as e:
        raise OSError(e.errno, f"input folder {folder}: cannot read it ({os_reason(e)})") from None
    return p.resolve()


def candidates_for_inputs(inputs: list[str | os.PathLike], exclude: list | None = None) -> ScanResult:
    """Discovery for ``batch``: folders are scanned like ``watch`` does (every file is taken as
    complete: a batch runs over finished acquisitions; their problems are all final and come back in
    :attr:`ScanResult.bad`); single files are their folder's tiles. A folder without any tile, an
    unreadable folder and a single input that is not a regular image file raise an error naming it.
    """
    total = ScanResult()
    by_root: dict[Path, list[Path]] = {}
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        if p.is_dir():
            check_input_folder(p)
            res = Scanner(p, 0.0, exclude).scan()
            tiles = res.complete + [_complete(c) for c in res.waiting]
            total.complete.extend(tiles)
            total.bad.update(res.bad)
            total.bad.update(res.unfinished)
            if not tiles and not res.bad and not res.unfinished:
                raise ValueError(f"input folder {inp}: no tiles found ({', '.join(IMAGE_SUFFIXES)})")
            for s, pos in res.positions.items():
                total.positions.setdefault(s, {}).update(pos)
        else:
            if not is_image_file(p):
                raise ValueError(f"input {inp} is not a tile ({', '.join(IMAGE_SUFFIXES)})")
            if not stat.S_ISREG(p.stat().st_mode):
                raise ValueError(f"input {inp} is not a regular file (a pipe or device)")
            if not utf8_name(str(p.resolve())):
                raise ValueError(f"input {inp}: file or folder name is not valid UTF-8 (rename it)")
            by_root.setdefault(p.resolve().parent, []).append(p.resolve())
    for root, paths in by_root.items():
        sc = Scanner(root, 0.0, exclude)
        for p in sorted(set(paths)):
            st = p.stat()
            total.complete.append(
                Candidate(
                    path=str(p), root=str(root), rel=p.name, section=sc.section_name(root), name=p.name,
                    size=int(st.st_size), mtime_ns=int(st.st_mtime_ns),
                )
            )
    seen: set[str] = set()
    uniq = []
    folders: dict[str, set[Path]] = {}  # section -> the folders its tiles come from
    for c in total.complete:
        if c.path not in seen:
            seen.add(c.path)
            uniq.append(c)
            folders.setdefault(c.section, set()).add(Path(c.path).parents[len(Path(c.name).parts) - 1])
    for section, dirs in sorted(folders.items()):
        if len(dirs) > 1:  # one section's reports and outputs would mix tiles that cannot be told apart
            a, b = sorted(dirs)[:2]
            raise ValueError(f"inputs {a} and {b} are both section '{section}' (a section is named by its "
                             "folder); process them in separate runs or into separate --out folders")
    total.complete = sorted(uniq, key=lambda c: (c.section, c.name))
    return total


def _complete(c: Candidate) -> Candidate:
    return Candidate(c.path, c.root, c.rel, c.section, c.name, c.size, c.mtime_ns, True)
