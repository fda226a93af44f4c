"""Reading weight files safely: safetensors, or ``torch.load(weights_only=True)``; never pickle."""

from __future__ import annotations

from pathlib import Path

import torch
from radalign.encoders.errors import InputError
from safetensors.torch import load_file


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a ``.safetensors`` file or a torch checkpoint.

    Torch files are read with ``weights_only=True``; a ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped and a DDP ``module.`` prefix stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
        raise InputError(path, "not a safe weights file", str(exc).splitlines()[0]) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(path, "not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
