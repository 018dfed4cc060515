"""The learned excess-blur layer: blur in px over what the modality looks like in focus (numpy only).

Total blur (:mod:`.psf`) cannot rank sharp against soft tiles with one threshold across EM
modalities: in-focus ssTEM reads about 0.5 px, in-focus SBEM 1.4-1.9 px along one axis, FIB-SEM
1.4-1.7 px. The excess-blur layer maps the spectrum of a tile to the Gaussian-equivalent blur
*added* on top of that in-focus look: the square roots of the eigenvalues of the added-PSF
covariance ``A`` (``major``, ``minor``, px), its major axis ``angle`` (degrees from +x towards +y,
[0, 180)) and ``e = sqrt((major^2 + minor^2) / 2)``. That is the number decisions use ("correct
above 1 px, retake above 3 px").

**Features** (:func:`features`, 208 per tile) come from the shared spectra
(:func:`.spectral.tile_spectra`), no second pass over the pixels:

* ``L`` (NR*NA = 160): log binned power over the windowed variance, on the sectors centred on the
  axes (so flips and transposes of a tile permute them exactly);
* ``LNr`` (NR = 20): the binned separable noise model, radial mean, same normalisation;
* ``NXp``, ``NYp`` (8 + 8): the noise colour along x and along y, ``log(Nx / Nc)`` and
  ``log(Ny / Nc)`` in 8 bands of |f| (flat = white; falling = correlated along that axis);
* ``fit`` (8): :func:`.psf.fit_spectra` on the axis-centred sectors (no significance margin,
  6 bins minimum: the rule the layer was trained with): Sxx, Sxy, Syy, alpha, log C over the
  variance, support, log noise over the variance, NaN flag;
* ``Llow`` (4): log mean power in the radial bins below ``F_MIN``.

Every power is divided by the tile's own variance, so a gain cancels exactly, and the mean is
removed before the FFT, so the offset never enters.

**Network**: a small MLP (208-128-128-3, SiLU), or the mean of an ensemble of them, evaluated with
``einsum`` (no BLAS threads). Its outputs are ``e`` (px) and the deviatoric part
``d1 = (Axx - Ayy) / 2``, ``d2 = Axy`` (px^2), so ``major/minor = sqrt(e^2 +- |d|)`` and
``angle = atan2(d2, d1) / 2``. It was trained (offline, torch: ``scripts/train_excess.py``) on
synthetic blur of the training folders of three modalities (ssTEM, SBEM, FIB-SEM), every benchmark
noise type, gains 0.2-2, with flips and transposes, so it does not depend on the scan axis. The
shipped weights (``qc/weights/excess_*.npz``) and their JSON cards, which name the training data
relative to the data root, are checked before use (:func:`load_weights`); each weight file belongs
to one analysis window size (:func:`weights_for`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .psf import PSFEstimate, fit_spectra
from .spectral import NA, NR, Spectra

__all__ = [
    "N_FEATURES",
    "WEIGHTS_DIR",
    "SHIPPED_WEIGHTS",
    "ExcessBlur",
    "ExcessWeights",
    "features",
    "feature_fit",
    "load_weights",
    "predict",
    "transform",
    "weights_for",
]

_NPROF = 8
_EPS = 1e-12
N_FEATURES = NR * NA + NR + 2 * _NPROF + 8 + 4  # 208
_SL_L = slice(0, NR * NA)
_SL_NX = slice(NR * NA + NR, NR * NA + NR + _NPROF)
_SL_NY = slice(NR * NA + NR + _NPROF, NR * NA + NR + 2 * _NPROF)
_I_FIT = NR * NA + NR + 2 * _NPROF

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: shipped weights by the side (px) of the analysis window they were trained on (256 = whole tile)
SHIPPED_WEIGHTS: dict[int, str] = {256: "excess_full.npz", 160: "excess_w160.npz", 128: "excess_w128.npz"}
_CARD_FORMAT = "napari-emdeblur excess-blur MLP v1"


# --------------------------------------------------------------------------- features
def _profile(noise: np.ndarray, f: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """(n, _NPROF) mean ``log(N / Nc)`` in bands of |f| over [0, 0.5]."""
    band = np.minimum((np.abs(f) / 0.5 * _NPROF).astype(int), _NPROF - 1)
    m = np.zeros((f.size, _NPROF))
    m[np.arange(f.size), band] = 1.0
    m /= np.maximum(m.sum(axis=0, keepdims=True), 1)
    return np.einsum("nf,fk->nk", np.log(np.maximum(noise, _EPS) / nc[:, None]), m)


def feature_fit(s: Spectra) -> PSFEstimate:
    """The PSF fit the features use: axis-centred sectors, no significance margin, 6 bins minimum."""
    return fit_spectra(s, axis_centred=True, significance=0.0, min_bins=6)


def features(s: Spectra, fit: PSFEstimate | None = None) -> np.ndarray:
    """The ``(n, N_FEATURES)`` float32 features of tiles (layout in the module docstring).

    Parameters
    ----------
    s : Spectra
        Their spectra (:func:`.spectral.tile_spectra`).
    fit : PSFEstimate, optional
        :func:`feature_fit` of ``s`` (computed when not given).

    Returns
    -------
    ndarray
    """
    fit = feature_fit(s) if fit is None else fit
    g = s.setup
    n = s.pb.shape[0]
    lv = np.log(np.maximum(s.var, _EPS))[:, None]
    lpow = np.log(np.maximum(s.pa, _EPS)) - lv
    lnr = (np.log(np.maximum(s.na, _EPS)) - lv).reshape(n, NR, NA).mean(axis=2)
    nxp = _profile(s.nx, np.fft.rfftfreq(g.w), s.nc)
    nyp = _profile(s.ny, np.fft.fftfreq(g.h), s.nc)
    ok = np.isfinite(fit.sigma_major)
    cov = np.where(ok[:, None, None], np.clip(np.nan_to_num(fit.cov), -4, 30), 0.0)
    fitf = np.stack(
        [
            cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1],
            np.where(ok, np.nan_to_num(fit.alpha), 2.0),
            np.where(ok, np.nan_to_num(fit.log_c) - lv[:, 0], 0.0),
            fit.n_bins / (NR * NA),
            np.log(np.maximum(fit.noise.astype(np.float64) ** 2, _EPS)) - lv[:, 0],
            (~ok).astype(float),
        ],
        axis=1,
    )
    llow = np.log(np.maximum(s.plow, _EPS)) - lv
    out = np.concatenate([lpow, lnr, nxp, nyp, fitf, llow], axis=1)
    return np.clip(out, -60, 60).astype(np.float32)


def transform(feats: np.ndarray, kind: str) -> np.ndarray:
    """The features of the flipped (``"flipx"``: x -> -x) or transposed (``"transpose"``) tiles.

    The spectral sectors permute exactly; the noise-model features follow approximately. Used to
    train the layer equivariant (the scan axis need not be known) and to test it.
    """
    a = np.arange(NA)
    if kind == "flipx":
        pa = (-a) % NA
    elif kind == "transpose":
        pa = (NA // 2 - a) % NA
    else:
        raise ValueError(f"unknown feature transform {kind!r}; choose flipx or transpose")
    perm = (np.arange(NR)[:, None] * NA + pa[None, :]).ravel()
    g = feats.copy()
    g[:, _SL_L] = feats[:, _SL_L][:, perm]
    i = _I_FIT
    if kind == "flipx":
        g[:, i + 1] = -feats[:, i + 1]
    else:
        g[:, _SL_NX], g[:, _SL_NY] = feats[:, _SL_NY], feats[:, _SL_NX]
        g[:, i], g[:, i + 2] = feats[:, i + 2], feats[:, i]
    return g


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class ExcessWeights:
    """A checked weight file: per ensemble member, the standardisation and the layers.

    ``members``: tuple of ``(mu, sd, ((W0, b0), (W1, b1), ...))`` (float32); ``card``: the JSON
    card; ``window``: the analysis window side the weights were trained on (None = whole tile).
    """

    path: str
    members: tuple
    card: dict
    window: int | None


def weights_for(side: int) -> Path:
    """The shipped weight file trained nearest (in log size) to an analysis window of ``side`` px."""
    best = min(SHIPPED_WEIGHTS, key=lambda k: abs(np.log(k / max(int(side), 1))))
    return WEIGHTS_DIR / SHIPPED_WEIGHTS[best]


def _bad(path: Path, why: str) -> ValueError:
    return ValueError(f"excess-blur weights {path}: {why}")


def _member(arrs: dict[str, np.ndarray], prefix: str, path: Path, hidden: list[int]) -> tuple:
    try:
        mu, sd = arrs[prefix + "mu"], arrs[prefix + "sd"]
    except KeyError as e:
        raise _bad(path, f"array {e.args[0]} missing") from None
    layers = []
    k = 0
    while prefix + f"W{k}" in arrs:
        w, b = arrs[prefix + f"W{k}"], arrs.get(prefix + f"b{k}")
        if b is None or w.ndim != 2 or b.shape != (w.shape[1],):
            raise _bad(path, f"layer {prefix}W{k} / b{k} has inconsistent shapes")
        layers.append((w, b))
        k += 1
    dims = [N_FEATURES] + list(hidden) + [3]
    got = [layers[0][0].shape[0]] + [w.shape[1] for w, _ in layers] if layers else []
    if got != dims:
        raise _bad(path, f"layer sizes {got} do not match the card's {dims}")
    if mu.shape != (N_FEATURES,) or sd.shape != (N_FEATURES,) or not (sd > 0).all():
        raise _bad(path, f"standardisation {prefix}mu / sd must be {N_FEATURES} numbers with sd > 0")
    for v in [mu, sd, *(a for wb in layers for a in wb)]:
        if not np.isfinite(v).all():
            raise _bad(path, "holds NaN or inf")
    return (mu, sd, tuple(layers))


@lru_cache(maxsize=8)
def load_weights(path: str | Path | None = None) -> ExcessWeights:
    """Load and check an excess-blur weight file and its card (``<name>.json`` next to it).

    Parameters
    ----------
    path : str or Path, optional
        A ``.npz`` file (default: the shipped whole-tile weights).

    Returns
    -------
    ExcessWeights

    Raises
    ------
    ValueError
        One line naming the file: missing or unreadable file or card, a card of another format,
        a weights checksum that does not match the card, arrays missing, of the wrong shape or
        not finite.
    """
    p = Path(path) if path is not None else WEIGHTS_DIR / SHIPPED_WEIGHTS[256]
    card_path = p.with_suffix(".json")
    try:
        raw = p.read_bytes()
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise _bad(p, f"cannot read the weights or their card {card_path.name} ({e})") from None
    if not isinstance(card, dict) or card.get("format") != _CARD_FORMAT:
        raise _bad(p, f"card {card_path.name} is not a {_CARD_FORMAT!r} card")
    if card.get("n_features") != N_FEATURES:
        raise _bad(p, f"card says {card.get('n_features')} input features, this version computes {N_FEATURES}")
    sha = card.get("weights_sha256")
    if sha is not None and hashlib.sha256(raw).hexdigest() != sha:
        raise _bad(p, "the file does not match the checksum in its card (corrupt or replaced)")
    hidden = card.get("architecture", {}).get("hidden")
    if not isinstance(hidden, list) or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise _bad(p, "card has no valid architecture.hidden list")
    window = card.get("window")
    if window is not None and (not isinstance(window, int) or window < 16):
        raise _bad(p, f"card window {window!r} is not None or a size in px")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrs = {k: np.asarray(z[k], np.float32) for k in z.files}
    except (OSError, ValueError) as e:
        raise _bad(p, f"not a readable .npz ({e})") from None
    n_members = int(arrs.pop("n_members", 0))
    if n_members != int(card.get("members", 1)) and not (n_members == 0 and card.get("members", 1) == 1):
        raise _bad(p, f"holds {n_members} ensemble members, its card says {card.get('members')}")
    prefixes = [f"m{i}_" for i in range(n_members)] if n_members else [""]
    members = tuple(_member(arrs, pre, p, hidden) for pre in prefixes)
    return ExcessWeights(path=str(p), members=members, card=card, window=window)


def _mlp(feats: np.ndarray, member: tuple) -> np.ndarray:
    mu, sd, layers = member
    h = (feats - mu) / sd
    for k, (w, b) in enumerate(layers):
        h = np.einsum("ni,ij->nj", h, w) + b  # einsum: no BLAS threads
        if k < len(layers) - 1:
            h = h / (1.0 + np.exp(-np.clip(h, -60, 60)))  # SiLU
    return h


@dataclass(frozen=True)
class ExcessBlur:
    """Excess blur per tile (arrays of shape ``(n,)``; ``cov``: ``(n, 2, 2)`` px^2 in (x, y) order).

    ``e``: the equivalent sigma ``sqrt((major^2 + minor^2) / 2)`` (px); ``major``, ``minor``: the
    added blur along its axes (px); ``angle``: the major axis, degrees from +x towards +y, [0, 180).
    """

    e: np.ndarray
    major: np.ndarray
    minor: np.ndarray
    angle: np.ndarray
    cov: np.ndarray


def predict(feats: np.ndarray, weights: ExcessWeights | str | Path | None = None) -> ExcessBlur:
    """The excess blur of tiles from their :func:`features`.

    Parameters
    ----------
    feats : ndarray, shape (n, N_FEATURES)
    weights : ExcessWeights, str or Path, optional
        Loaded weights or a weight file (default: the shipped whole-tile weights).

    Returns
    -------
    ExcessBlur
    """
    w = weights if isinstance(weights, ExcessWeights) else load_weights(weights)
    f = np.asarray(feats, np.float32)
    if f.ndim != 2 or f.shape[1] != N_FEATURES:
        raise ValueError(f"expected features of shape (n, {N_FEATURES}), got {f.shape}")
    out = np.mean([_mlp(f, m) for m in w.members], axis=0).astype(np.float64)
    e = np.clip(out[:, 0], 0.0, None)
    d1, d2 = out[:, 1], out[:, 2]
    e2 = e * e
    d = np.minimum(np.hypot(d1, d2), e2)  # keeps the excess covariance positive semi-definite
    major = np.sqrt(e2 + d)
    minor = np.sqrt(np.clip(e2 - d, 0.0, None))
    angle = np.degrees(0.5 * np.arctan2(d2, d1)) % 180.0
    c2, s2 = np.cos(np.radians(2 * angle)), np.sin(np.radians(2 * angle))
    cov = np.empty((len(e), 2, 2))
    cov[:, 0, 0] = e2 + d * c2
    cov[:, 1, 1] = e2 - d * c2
    cov[:, 0, 1] = cov[:, 1, 0] = d * s2
    return ExcessBlur(e=e, major=major, minor=minor, angle=angle, cov=cov)
