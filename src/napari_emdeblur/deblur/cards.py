"""Model cards and weights files checked as files, before any tensor exists (no torch import).

A model is ``NAME.pt`` (a ``state_dict``) beside ``NAME.json`` (its card, see
:mod:`.weights`). :func:`read_card` checks, in this order and with a message that names the file:
the weights path is a regular ``.pt`` file (not a folder, pipe or device, so nothing blocks on
reading it); the card beside it is a regular, readable, UTF-8 JSON object; ``model_type`` is a
known name, ``architecture`` an object and ``weights_sha256`` a hex digest. The architecture's
fields (types, ranges, memory) are checked by the network's config class when the model is built
(:func:`napari_emdeblur.deblur.weights.build_model`), still before any weight tensor is allocated.
The pipeline reads cards here without importing torch.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from ..io.errors import os_reason

__all__ = ["MODEL_TYPE_NAMES", "WeightsError", "card_path", "check_weights_path", "read_card"]

#: the model types a card may name (their classes live in :data:`.weights.MODEL_TYPES`)
MODEL_TYPE_NAMES = ("gran", "sbgran", "unet")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class WeightsError(ValueError):
    """Weights or model card missing, corrupt or not matching each other; the message names the file."""


def card_path(weights_path: str | os.PathLike) -> Path:
    """The model card beside ``weights_path`` (``NAME.pt`` -> ``NAME.json``)."""
    return Path(weights_path).with_suffix(".json")


def _regular(path: Path, what: str) -> os.stat_result:
    """Stat of ``path`` (following links) or WeightsError; refuses folders, pipes and devices."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WeightsError(f"{path}: {what} not found") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot open the {what} ({os_reason(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"{path}: is not a regular file (a pipe or device), not a {what}")
    return st


def check_weights_path(path: str | os.PathLike) -> Path:
    """``path`` when it is a regular, non-empty ``.pt`` file; else :class:`WeightsError`."""
    p = Path(path)
    if p.suffix.lower() != ".pt":
        raise WeightsError(f"{p}: weights must be a .pt file (with its .json model card beside it)")
    st = _regular(p, "weights file")
    if st.st_size == 0:
        raise WeightsError(f"{p}: weights file is empty (0 bytes)")
    return p


def read_card(path: str | os.PathLike) -> dict:
    """The checked model card of weights ``path`` (see the module docstring); :class:`WeightsError`
    naming the file when anything is wrong.
    """
    check_weights_path(path)
    cp = card_path(path)
    _regular(cp, "model card")
    try:
        raw = cp.read_bytes()
    except OSError as e:
        raise WeightsError(f"{cp}: cannot read the model card ({os_reason(e)})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsError(f"{cp}: model card is not UTF-8 text") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cp}: model card is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(card, dict):
        raise WeightsError(f"{cp}: model card must be a JSON object, not a {type(card).__name__}")
    for key in ("model_type", "architecture", "weights_sha256"):
        if key not in card:
            raise WeightsError(f"{cp}: model card lacks {key!r}")
    mt = card["model_type"]
    if not isinstance(mt, str) or mt not in MODEL_TYPE_NAMES:
        raise WeightsError(f"{cp}: unknown model_type {mt!r} (expected one of {', '.join(MODEL_TYPE_NAMES)})")
    if not isinstance(card["architecture"], dict):
        raise WeightsError(f"{cp}: 'architecture' must be a JSON object, got {card['architecture']!r}"[:300])
    sha = card["weights_sha256"]
    if not isinstance(sha, str) or not _SHA_RE.match(sha.lower()):
        raise WeightsError(f"{cp}: 'weights_sha256' must be a 64-digit hex sha256, got {sha!r}"[:300])
    return card
