"""Saving and loading model weights together with their JSON model card.

A model is two files side by side: ``NAME.pt`` (a plain ``state_dict``, loaded with
``weights_only=True``) and ``NAME.json`` (the model card). The card holds at least::

    model_type        "gran" | "unet"
    architecture      the config dict (GRANConfig / UNetConfig fields)
    weights_sha256    sha256 of NAME.pt
and, for trained models, ``training`` (data folders + sha256 of every file, degradation
ranges, steps, losses, ...), ``validation`` (PSNR/SSIM), ``git_commit`` and ``created``.

``load_model`` refuses (``WeightsError``) a missing card, a weights file whose sha256 differs
from the card's, an unreadable file, or tensors whose shapes do not fit the architecture.
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
from .nets.gran import GRAN, GRANConfig
from .nets.sbgran import SBGRAN, SBGRANConfig
from .nets.unet import UNet, UNetConfig
from .shipped import SHIPPED_NAME, shipped_weights_path  # noqa: F401  (re-exported)

MODEL_TYPES = {"gran": (GRAN, GRANConfig), "unet": (UNet, UNetConfig), "sbgran": (SBGRAN, SBGRANConfig)}


class WeightsError(ValueError):
    """Weights or model card missing, corrupt or not matching each other."""


def card_path(weights_path: str | os.PathLike) -> Path:
    return Path(weights_path).with_suffix(".json")


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


def build_model(model_type: str, architecture: dict | None = None) -> nn.Module:
    """Instantiate an untrained model from its type and config dict."""
    if model_type not in MODEL_TYPES:
        raise WeightsError(f"unknown model_type {model_type!r} (expected one of {sorted(MODEL_TYPES)})")
    cls, cfg_cls = MODEL_TYPES[model_type]
    try:
        cfg = cfg_cls.from_dict(dict(architecture or {}))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"bad architecture in model card: {e}") from e
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


def read_card(path: str | os.PathLike) -> dict:
    """The model card next to weights ``path`` (raises WeightsError if missing/invalid)."""
    cp = card_path(path)
    if not cp.is_file():
        raise WeightsError(f"model card {cp} not found (every weights file needs its .json card)")
    try:
        card = json.loads(cp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"model card {cp} is not valid JSON: {e}") from e
    for key in ("model_type", "architecture", "weights_sha256"):
        if key not in card:
            raise WeightsError(f"model card {cp} lacks {key!r}")
    return card


def load_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load weights + card and return ``(model.eval() on device, card)``.

    ``path=None`` loads the shipped weights. Raises ``WeightsError`` (a ``ValueError``) with
    a message saying what is wrong if the weights or card are missing, corrupt or mismatched.
    """
    path = Path(path) if path is not None else shipped_weights_path()
    if not path.is_file():
        hint = " (shipped weights are not installed)" if path == shipped_weights_path() else ""
        raise WeightsError(f"weights file {path} not found{hint}")
    card = read_card(path)
    digest = sha256_file(path)
    if digest != card["weights_sha256"]:
        raise WeightsError(
            f"weights file {path} does not match its card: sha256 {digest[:12]}... != "
            f"{str(card['weights_sha256'])[:12]}... (file corrupt or replaced)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means a corrupt file
        raise WeightsError(f"weights file {path} could not be read: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state_dict of tensors")
    model = build_model(card["model_type"], card["architecture"])
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
        raise WeightsError(f"weights {path} do not fit the card's architecture: " + "; ".join(parts))
    model.load_state_dict(state)
    model.eval()
    return model.to(device), card


def load_card_hash(path: str | os.PathLike | None = None) -> str:
    """sha256 of the model card file of ``path`` (None = shipped weights), for provenance logs."""
    cp = card_path(Path(path) if path is not None else shipped_weights_path())
    if not cp.is_file():
        raise WeightsError(f"model card {cp} not found")
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
