"""Training data: sharp EM tiles from folders, EM-style augmentation, on-the-fly degradation.

Every sample is a pair ``(degraded, sharp)`` of float32 crops in [0, 1]-ish. The sharp crop
gets geometric (rot90 / flip) and contrast augmentation (inversion, gamma, local contrast,
gain/offset) so that the model sees the variety of EM contrast (TEM vs. inverted SEM
backscatter, different detector settings); the degradation (blur + Poisson-Gaussian noise,
``degrade.DegradationRanges``) is then applied to a crop with a margin so the blur has
real context, and the margin is cut away.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ...io.errors import os_reason
from ...io.formats import IMAGE_SUFFIXES, is_image_file
from ...io.values import to_grayscale, value_range
from .degrade import Degradation, DegradationRanges

MARGIN = 24  # context (px) around each crop for the blur; larger than any training PSF radius


def list_images(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """All image files (the reader's suffixes, :mod:`napari_emdeblur.io.formats`) directly inside
    ``dirs``, sorted; error naming the entry if one finds none.

    An entry may also be a file, or a glob pattern of files (``sbem/0[1-5]*.png``).
    """
    files: list[Path] = []
    for d in dirs:
        if any(ch in str(d) for ch in "*?["):
            hits = sorted(p for p in Path(str(d)).parent.glob(Path(str(d)).name) if is_image_file(p) and not p.is_dir())
            if not hits:
                raise FileNotFoundError(f"training data pattern {d} matches no image")
            files.extend(hits)
            continue
        d = Path(d)
        if is_image_file(d) and d.exists() and not d.is_dir():
            files.append(d)
            continue
        if not d.is_dir():
            raise FileNotFoundError(f"training data folder {d} not found")
        try:
            files.extend(sorted(p for p in d.iterdir() if is_image_file(p) and not p.is_dir()))
        except OSError as e:
            raise OSError(e.errno, f"training data folder {d}: cannot list it ({os_reason(e)})") from None
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(str(d) for d in dirs)}")
    return files


def to_float01(a: np.ndarray) -> np.ndarray:
    """Scale an image to float32 [0, 1] as inference does (``io.values.value_range``, mode
    ``auto``: uint16 by its significant bit depth). Images read by :func:`read_image_file` are
    uint8/uint16 (the reader's dtype policy); floats are taken as they are.
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # colour -> grey as the readers do (io.values)
        a = to_grayscale(a)
    if a.dtype.kind in "iub":
        lo, hi = value_range(a, "auto")
        return ((a.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    return a.astype(np.float32)


def read_image_file(path: Path, notes: list[str] | None = None) -> list[np.ndarray]:
    """2-D float32 [0,1] sections of one file (a multi-page TIFF gives several).

    Read by the package's reader (``io.load_section``): the same formats, dtype and colour policy
    and the same errors (:class:`~napari_emdeblur.io.errors.EMReadError` naming the file) as
    everywhere else; what the reader converted is appended to ``notes``.
    """
    from ...io.read import load_section

    sec = load_section(path)
    if notes is not None:
        notes.extend(sec.metadata.get("warnings", []))
    a = np.asarray(sec.data)
    if a.ndim == 2:
        return [to_float01(a)]
    return [to_float01(s) for s in a]


def load_sections(dirs: Sequence[str | os.PathLike]) -> tuple[list[np.ndarray], list[Path]]:
    sections, files, _ = load_grouped_sections(dirs)
    return sections, files


def load_grouped_sections(
    dirs: Sequence[str | os.PathLike], notes: list[str] | None = None,
) -> tuple[list[np.ndarray], list[Path], list[int]]:
    """Like :func:`load_sections`, plus the index in ``dirs`` each section came from (so a
    sampler can weight the folders equally whatever their sizes). The reader's warnings (values
    converted, channels dropped, ...) are appended to ``notes``.
    """
    secs: list[np.ndarray] = []
    files: list[Path] = []
    groups: list[int] = []
    for g, d in enumerate(dirs):
        for f in list_images([d]):
            s = read_image_file(f, notes)
            secs.extend(s)
            groups.extend([g] * len(s))
            files.append(f)
    return secs, files, groups


def file_manifest(files: list[Path], root: str | os.PathLike | None = None) -> list[dict]:
    """``[{path, sha256}]`` for the model card; paths relative to ``root`` (the data root) when
    they lie under it, so a card names no machine path.
    """
    out = []
    for f in files:
        name = Path(f)
        if root is not None:
            try:
                name = Path(os.path.relpath(Path(f).resolve(), Path(root).resolve()))
            except ValueError:
                pass
        out.append({"path": name.as_posix(), "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()})
    return out


@dataclass
class Augment:
    """EM contrast augmentation probabilities/ranges (applied to the sharp image)."""

    geometric: bool = True
    invert_prob: float = 0.25
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.6, 1.6)
    local_contrast_prob: float = 0.3
    local_contrast: tuple[float, float] = (0.6, 1.5)
    local_sigma: tuple[float, float] = (6.0, 30.0)
    gain_prob: float = 0.5
    low: tuple[float, float] = (0.0, 0.25)
    high: tuple[float, float] = (0.7, 1.0)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.geometric:
            x = np.rot90(x, int(rng.integers(4)))
            if rng.random() < 0.5:
                x = x[:, ::-1]
        x = np.ascontiguousarray(x, dtype=np.float32)
        if rng.random() < self.invert_prob:
            x = 1.0 - x
        if rng.random() < self.gamma_prob:
            g = float(np.exp(rng.uniform(*np.log(self.gamma))))
            x = np.clip(x, 0, 1) ** g
        if rng.random() < self.local_contrast_prob:
            bg = ndimage.gaussian_filter(x, float(rng.uniform(*self.local_sigma)), mode="reflect")
            x = bg + (x - bg) * float(rng.uniform(*self.local_contrast))
        if rng.random() < self.gain_prob:
            lo, hi = float(rng.uniform(*self.low)), float(rng.uniform(*self.high))
            x = lo + (hi - lo) * x
        return np.clip(x, 0.0, 1.0).astype(np.float32)


@dataclass
class PairSampler:
    """Draws ``(degraded, sharp)`` training pairs from in-memory sharp sections."""

    sections: list[np.ndarray]
    crop: int = 128
    ranges: DegradationRanges = field(default_factory=DegradationRanges)
    augment: Augment | None = field(default_factory=Augment)
    margin: int = MARGIN
    groups: list[int] | None = None  # folder of each section: folders are drawn equally often

    def __post_init__(self) -> None:
        if not self.sections:
            raise ValueError("no training sections")
        need = self.crop + 2 * self.margin
        groups = self.groups if self.groups is not None else [0] * len(self.sections)
        keep = [k for k, s in enumerate(self.sections) if min(s.shape) >= need]
        self.sections = [self.sections[k] for k in keep]
        groups = [groups[k] for k in keep]
        if not self.sections:
            raise ValueError(f"all training images are smaller than crop + margin ({need} px)")
        areas = np.array([s.size for s in self.sections], float)
        g = np.asarray(groups)
        for v in np.unique(g):  # area-weighted within a folder, folders equal
            areas[g == v] /= areas[g == v].sum()
        self._p = areas / areas.sum()
        self.groups = groups

    def sample_context(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Degradation]:
        """``(degraded, sharp, degradation)`` with the margin still on (``crop + 2 margin``)."""
        s = self.sections[int(rng.choice(len(self.sections), p=self._p))]
        n = self.crop + 2 * self.margin
        y = int(rng.integers(0, s.shape[0] - n + 1))
        x = int(rng.integers(0, s.shape[1] - n + 1))
        big = s[y : y + n, x : x + n]
        big = self.augment(big, rng) if self.augment else np.ascontiguousarray(big, np.float32)
        d = self.ranges.sample(rng)
        return d.apply(big, rng), big, d

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Degradation]:
        deg, big, d = self.sample_context(rng)
        m, c = self.margin, self.crop
        return (
            np.ascontiguousarray(deg[m : m + c, m : m + c], np.float32),
            np.ascontiguousarray(big[m : m + c, m : m + c], np.float32),
            d,
        )

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.sample(rng)[:2] for _ in range(n)]
        deg = np.stack([p[0] for p in pairs])[:, None]
        sharp = np.stack([p[1] for p in pairs])[:, None]
        return deg, sharp

    def batch_context(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(degraded, sharp, degraded with context)``: the third is the crop with its margin,
        for estimates that need more than the crop (the PSF estimate of a semi-blind model).
        """
        m, c = self.margin, self.crop
        trip = [self.sample_context(rng)[:2] for _ in range(n)]
        ctx = np.stack([t[0] for t in trip])[:, None].astype(np.float32)
        sharp = np.stack([t[1][m : m + c, m : m + c] for t in trip])[:, None].astype(np.float32)
        return np.ascontiguousarray(ctx[..., m : m + c, m : m + c]), sharp, ctx


def make_val_set(
    sections: list[np.ndarray],
    n: int = 16,
    crop: int = 256,
    seed: int = 1234,
    ranges: DegradationRanges | None = None,
    groups: list[int] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """A fixed, seeded validation set: ``[(degraded, sharp, degradation dict)]``.

    No contrast augmentation and no unblurred samples; crops spread over the sections.
    """
    import dataclasses

    rng = np.random.default_rng(seed)
    ranges = dataclasses.replace(ranges or DegradationRanges(), sharp_prob=0.0)
    sampler = PairSampler(sections, crop=crop, ranges=ranges, augment=None, groups=groups)
    # round-robin over the folders, then over each folder's sections
    assert sampler.groups is not None  # filled in by PairSampler.__post_init__
    by_group: dict[int, list[np.ndarray]] = {}
    for s, g in zip(sampler.sections, sampler.groups):
        by_group.setdefault(g, []).append(s)
    order = [by_group[g] for g in sorted(by_group)]
    out = []
    for k in range(n):
        secs = order[k % len(order)]
        s = secs[(k // len(order)) % len(secs)]
        m = crop + 2 * sampler.margin
        y = int(rng.integers(0, s.shape[0] - m + 1))
        x = int(rng.integers(0, s.shape[1] - m + 1))
        big = np.ascontiguousarray(s[y : y + m, x : x + m], np.float32)
        d = ranges.sample(rng)
        deg = d.apply(big, rng)
        mm = sampler.margin
        out.append((deg[mm : mm + crop, mm : mm + crop].copy(), big[mm : mm + crop, mm : mm + crop].copy(), d.to_dict()))
    return out
