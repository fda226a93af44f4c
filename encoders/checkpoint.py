"""``save_pretrained`` / ``load_pretrained``: ``config.json`` + ``model.safetensors`` + tower files.

Loading needs no hub: towers are rebuilt from the saved architecture (timm name, the text
backbone's own ``config.json`` and tokenizer under ``text/``) with random weights, then the
saved weights are loaded. Harmless key drift across library versions (``position_ids`` buffers,
BatchNorm's ``num_batches_tracked``) is tolerated; anything else that does not match refuses to
load, naming the keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import torch
from radalign.encoders.atomic import atomic_dir
from radalign.encoders.config import ModelConfig, from_dict, to_dict
from safetensors.torch import load_file, save_file

from radalign._version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "radalign-model/1"
HARMLESS_KEYS = re.compile(r"(^|\.)(position_ids|num_batches_tracked)$")


def save_pretrained(model, directory: str | Path) -> Path:
    """Write ``model`` to ``directory`` atomically (a crash leaves the old one or none)."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        for name, tower in (("image", model.image_tower), ("text", model.text_tower)):
            save_files = getattr(tower, "save_backbone_files", None)
            if save_files is not None:
                (tmp / name).mkdir()
                save_files(tmp / name)
        state = _unshared(model.state_dict())
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        meta = {
            "format": FORMAT,
            "radalign_version": __version__,
            "fingerprint": model_fingerprint(model),
            "model": to_dict(model.config),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory


def is_pretrained_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def read_saved_config(directory: str | Path) -> ModelConfig:
    """The model config stored in a ``save_pretrained`` directory."""
    directory = Path(directory)
    if not is_pretrained_dir(directory):
        raise FileNotFoundError(
            f"{directory} is not a radalign model directory (needs {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}; was it written by save_pretrained?)"
        )
    meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}/{CONFIG_NAME}: unknown format {meta.get('format')!r}")
    return from_dict(ModelConfig, meta["model"])


def local_tower_config(config: ModelConfig, directory: Path) -> ModelConfig:
    """The config with both towers pointed at the files saved in ``directory``, no weights."""
    image = dataclasses.replace(config.image, pretrained=None)
    if config.image.backend == "open_clip":
        image = dataclasses.replace(image, name=str(directory / "image"))
    text = dataclasses.replace(
        config.text, source=str(directory / "text"), pretrained=False, arch={}
    )
    return dataclasses.replace(config, image=image, text=text)


def load_pretrained(directory: str | Path):
    """Rebuild a model written by :func:`save_pretrained`, bit-identical."""
    from radalign.encoders.model import RadAlignModel

    directory = Path(directory)
    saved = read_saved_config(directory)
    model = RadAlignModel(local_tower_config(saved, directory), load_weights=False)
    model.config = saved
    state = load_file(str(directory / WEIGHTS_NAME))
    load_checked(model, state, directory / WEIGHTS_NAME)
    return model


def load_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], where) -> None:
    """``load_state_dict`` that tolerates harmless drift and explains any real mismatch."""
    own = model.state_dict()
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state and not HARMLESS_KEYS.search(k)]
    unexpected = [k for k in state if k not in own and not HARMLESS_KEYS.search(k)]
    if shape_errors or missing or unexpected:
        parts = []
        if shape_errors:
            parts.append(f"{len(shape_errors)} shape mismatches, e.g. {shape_errors[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise ValueError(f"weights in {where} do not match the model config: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


#: Config fields added after models were published (dotted names), left out of the fingerprint
#: while they hold their default, so indices and heads built with an earlier model keep matching.
_LATER_FIELDS = {"image.pool_grid": None, "text.word_layer": -1, "text_pool_heads": 0}


def _fingerprint_config(config) -> dict:
    out = to_dict(config)
    for dotted, default in _LATER_FIELDS.items():
        *parents, name = dotted.split(".")
        part = out
        for parent in parents:
            part = part.get(parent, {})
        if part.get(name, default) == default:
            part.pop(name, None)
    return out


def model_fingerprint(model) -> str:
    """sha256 (16 hex digits) over the config and every tensor, in key order."""
    h = hashlib.sha256(json.dumps(_fingerprint_config(model.config), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no two sharing memory (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen:
            value = value.clone()
        seen.add(ptr)
        out[key] = value
    return out
