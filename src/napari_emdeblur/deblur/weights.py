"""Saving and loading model weights together with their JSON model card.

A model is two files side by side: ``NAME.pt`` (a plain ``state_dict``, loaded with
``weights_only=True``) and ``NAME.json`` (the model card). The card holds at least::

    model_type        "gran" | "unet"
    architecture      the config dict (GRANConfig / UNetConfig fields)
    weights_sha256    sha256 of NAME.pt
and, for trained models, ``training`` (data folders + sha256 of every file, degradation
ranges, steps, losses, ...), ``validation`` (PSNR/SSIM), ``git_commit`` and ``created``.

``load_model`` refuses (``WeightsError``, its message naming the file) a missing or malformed
card (checked field by field, :mod:`.cards`; the architecture's types, ranges and parameter count
before any tensor is allocated), a weights file whose sha256 differs from the card's, an unreadable
or foreign file, tensors holding NaN or infinities, or tensors whose shapes do not fit the
architecture.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from ..io.atomic import atomic_write, atomic_write_bytes, sha256_file
from ..io.errors import os_reason
from .cards import MODEL_TYPE_NAMES, WeightsError, card_path, check_weights_path, read_card  # noqa: F401
from .nets.gran import GRAN, CardConfig, GRANConfig
from .nets.sbgran import SBGRAN, SBGRANConfig
from .nets.unet import UNet, UNetConfig
from .shipped import SHIPPED_NAME, shipped_weights_path  # noqa: F401  (re-exported)

MODEL_TYPES: dict[str, tuple[type[nn.Module], type[CardConfig]]] = {
    "gran": (GRAN, GRANConfig), "unet": (UNet, UNetConfig), "sbgran": (SBGRAN, SBGRANConfig),
}
assert set(MODEL_TYPES) == set(MODEL_TYPE_NAMES)
#: a model card may declare at most this many parameters (400 MB in fp32): a damaged card
#: (``width`` 100000) is refused before the allocator is asked for hundreds of GB
MAX_PARAMETERS = 100_000_000


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def checked_config(model_type: str, architecture: dict | None = None, *, source: str = "architecture"):
    """``(model class, config)`` for a model type and config dict, every field checked.

    Types and ranges are checked by the config class (:meth:`CardConfig.from_dict`) and the
    parameter count is measured on the ``meta`` device (no memory allocated), so a damaged card is
    refused before any tensor exists; :class:`WeightsError` names ``source`` (the card, or ``--arch``).
    """
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise WeightsError(f"{source}: unknown model_type {model_type!r} (expected one of {sorted(MODEL_TYPES)})")
    if architecture is not None and not isinstance(architecture, dict):
        raise WeightsError(f"{source}: the architecture must be a JSON object, got {architecture!r}"[:300])
    cls, cfg_cls = MODEL_TYPES[model_type]
    try:
        cfg = cfg_cls.from_dict(dict(architecture or {}))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: bad architecture: {e}") from None
    try:
        with torch.device("meta"):
            n_params = sum(p.numel() for p in cls(cfg).parameters())
    except (RuntimeError, ValueError, TypeError) as e:
        raise WeightsError(f"{source}: bad architecture: {e}") from None
    if n_params > MAX_PARAMETERS:
        raise WeightsError(
            f"{source}: the architecture has {n_params / 1e6:.0f} M parameters "
            f"({n_params * 4 / 2**30:.1f} GiB), more than the {MAX_PARAMETERS // 1_000_000} M allowed"
        )
    return cls, cfg


def build_model(model_type: str, architecture: dict | None = None, *, source: str = "architecture") -> nn.Module:
    """Instantiate an untrained model from its type and config dict (checked: :func:`checked_config`)."""
    cls, cfg = checked_config(model_type, architecture, source=source)
    return cls(cfg)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), overwrite=True, makedirs=True)


def atomic_write_json(obj: dict, path: str | os.PathLike) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    atomic_write_bytes(path, data, overwrite=True, makedirs=True)


def save_model(model: nn.Module, path: str | os.PathLike, card: dict | None = None) -> dict:
    """Write ``path`` (.pt state_dict) and its card (.json) atomically; returns the card.

    ``model_type``, ``architecture`` and ``weights_sha256`` are filled in from the model.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"weights file must end in .pt, got {path.name}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)
    card = dict(card or {})
    card["model_type"] = getattr(model, "model_type", type(model).__name__.lower())
    card["architecture"] = model.cfg.to_dict()
    card["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    card["weights_file"] = path.name
    card["weights_sha256"] = sha256_file(path)
    card.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    card.setdefault("git_commit", git_commit())
    atomic_write_json(card, card_path(path))
    return card


def load_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load weights + card and return ``(model.eval() on device, card)``.

    ``path=None`` loads the shipped weights. Raises ``WeightsError`` (a ``ValueError``) with
    a message saying what is wrong if the weights or card are missing, corrupt or mismatched.
    """
    path = Path(path) if path is not None else shipped_weights_path()
    if not path.exists() and path == shipped_weights_path():
        raise WeightsError(f"{path}: weights file not found (the shipped weights are not installed)")
    card = read_card(path)  # the files (regular, .pt + UTF-8 JSON card), the card's fields
    cp = card_path(path)
    cls, cfg = checked_config(card["model_type"], card["architecture"], source=str(cp))  # before any tensor
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weights file ({os_reason(e)})") from None
    if digest != str(card["weights_sha256"]).lower():
        raise WeightsError(
            f"{path}: weights file does not match its card {cp.name}: sha256 {digest[:12]}... != "
            f"{str(card['weights_sha256'])[:12]}... (file corrupt or replaced)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling error means a damaged or foreign file
        raise WeightsError(
            f"{path}: could not be read as PyTorch weights (not a state_dict file, or truncated/corrupt)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"{path}: tensor {k!r} holds NaN or infinite values (damaged weights)")
    model = cls(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs architecture {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
        if bad:
            parts.append(f"{len(bad)} shape mismatches (e.g. {bad[0]})")
        raise WeightsError(f"{path}: weights do not fit the architecture of {cp.name}: " + "; ".join(parts))
    model.load_state_dict(state)
    model.eval()
    return model.to(device), card


def load_card_hash(path: str | os.PathLike | None = None) -> str:
    """sha256 of the model card file of ``path`` (None = shipped weights), for provenance logs."""
    cp = card_path(Path(path) if path is not None else shipped_weights_path())
    if not cp.is_file():
        raise WeightsError(f"{cp}: model card not found")
    return sha256_file(cp)


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, **card_updates) -> dict:
    """Copy checked weights ``src`` (+ card) to ``dst`` (e.g. a training run's ``model_best.pt``
    to ``shipped_weights_path()``), re-writing the card with the new file name/sha256 and
    any ``card_updates``. Returns the new card.
    """
    model, card = load_model(src)
    card.update(card_updates)
    card["exported_from"] = {"path": str(src), "weights_sha256": card["weights_sha256"]}
    return save_model(model, Path(dst), card)
