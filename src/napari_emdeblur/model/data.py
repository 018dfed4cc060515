"""Training data: sharp EM tiles from folders, EM-style augmentation, on-the-fly degradation.

Every sample is a pair ``(degraded, sharp)`` of float32 crops in [0, 1]-ish. The sharp crop
gets geometric (rot90 / flip) and contrast augmentation (inversion, gamma, local contrast,
gain/offset) so that the model sees the variety of EM contrast (TEM vs. inverted SEM
backscatter, different detector settings); the degradation (blur + Poisson-Gaussian noise,
``core.degrade.DegradationRanges``) is then applied to a crop with a margin so the blur has
real context, and the margin is cut away.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.degrade import Degradation, DegradationRanges
from ..core.values import value_range

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MARGIN = 24  # context (px) around each crop for the blur; larger than any training PSF radius


def list_images(dirs: list[str | os.PathLike]) -> list[Path]:
    """All image files (png/tif/...) directly inside ``dirs``, sorted; error if none."""
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.suffix.lower() in IMAGE_EXTS:
            files.append(d)
            continue
        if not d.is_dir():
            raise FileNotFoundError(f"training data folder {d} not found")
        files.extend(sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS))
    if not files:
        raise ValueError(f"no images (png/tif) found in {[str(d) for d in dirs]}")
    return files


def to_float01(a: np.ndarray) -> np.ndarray:
    """Scale an image to float32 [0, 1] as inference does (``core.values.value_range``, mode
    ``auto``: uint16 by its significant bit depth); floats are taken as they are."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A) -> grey, same value scale
        return to_float01(a[..., :3]).mean(axis=-1).astype(np.float32)
    if a.dtype.kind in "iub":
        lo, hi = value_range(a, "auto")
        return ((a.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    return a.astype(np.float32)


def read_image_file(path: Path) -> list[np.ndarray]:
    """2-D float32 [0,1] sections of one file (a multi-page TIFF gives several)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        from skimage import io as skio

        a = skio.imread(path)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        return [to_float01(a)]
    if a.ndim == 2:
        return [to_float01(a)]
    if a.ndim == 3:
        return [to_float01(s) for s in a]
    raise ValueError(f"{path}: unsupported image shape {a.shape}")


def load_sections(dirs: list[str | os.PathLike]) -> tuple[list[np.ndarray], list[Path]]:
    files = list_images(dirs)
    secs: list[np.ndarray] = []
    for f in files:
        secs.extend(read_image_file(f))
    return secs, files


def file_manifest(files: list[Path]) -> list[dict]:
    """``[{path, sha256}]`` for the model card."""
    out = []
    for f in files:
        out.append({"path": str(f), "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()})
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

    def __post_init__(self) -> None:
        if not self.sections:
            raise ValueError("no training sections")
        need = self.crop + 2 * self.margin
        self.sections = [s for s in self.sections if min(s.shape) >= need]
        if not self.sections:
            raise ValueError(f"all training images are smaller than crop + margin ({need} px)")
        areas = np.array([s.size for s in self.sections], float)
        self._p = areas / areas.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Degradation]:
        s = self.sections[int(rng.choice(len(self.sections), p=self._p))]
        n = self.crop + 2 * self.margin
        y = int(rng.integers(0, s.shape[0] - n + 1))
        x = int(rng.integers(0, s.shape[1] - n + 1))
        big = s[y : y + n, x : x + n]
        big = self.augment(big, rng) if self.augment else np.ascontiguousarray(big, np.float32)
        d = self.ranges.sample(rng)
        deg = d.apply(big, rng)
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


def make_val_set(
    sections: list[np.ndarray],
    n: int = 16,
    crop: int = 256,
    seed: int = 1234,
    ranges: DegradationRanges | None = None,
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """A fixed, seeded validation set: ``[(degraded, sharp, degradation dict)]``.

    No contrast augmentation and no unblurred samples; crops spread over the sections."""
    import dataclasses

    rng = np.random.default_rng(seed)
    ranges = dataclasses.replace(ranges or DegradationRanges(), sharp_prob=0.0)
    sampler = PairSampler(sections, crop=crop, ranges=ranges, augment=None)
    out = []
    for k in range(n):
        s = sampler.sections[k % len(sampler.sections)]
        m = crop + 2 * sampler.margin
        y = int(rng.integers(0, s.shape[0] - m + 1))
        x = int(rng.integers(0, s.shape[1] - m + 1))
        big = np.ascontiguousarray(s[y : y + m, x : x + m], np.float32)
        d = ranges.sample(rng)
        deg = d.apply(big, rng)
        mm = sampler.margin
        out.append((deg[mm : mm + crop, mm : mm + crop].copy(), big[mm : mm + crop, mm : mm + crop].copy(), d.to_dict()))
    return out
