"""Save and load trained heads: ``head.safetensors`` + ``config.json`` in one directory,
written atomically; nothing is unpickled on load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from radalign.encoders.atomic import atomic_dir
from radalign.heads.blocks import build_head
from radalign.heads.train import TrainedHead
from safetensors.torch import load_file, save_file

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load_head", "save_head", "write_head_files"]

WEIGHTS_FILE = "head.safetensors"
CONFIG_FILE = "config.json"


def save_head(head: TrainedHead, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``out/`` (replacing it atomically) with the weights and config (+ ``extra``)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_head_files(head, tmp, extra)
    return out


def write_head_files(head: TrainedHead, directory: Path, extra: dict | None = None) -> None:
    """Write the two files into an existing (temporary) directory; see :func:`save_head`."""
    state = {k: v.detach().contiguous().cpu() for k, v in head.module.state_dict().items()}
    config = {**head.config, **(extra or {})}
    save_file(state, str(Path(directory) / WEIGHTS_FILE))
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))


def load_head(path: str | os.PathLike) -> TrainedHead:
    """Rebuild a head saved by :func:`save_head`; ``FileNotFoundError``/``ValueError`` if bad."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing (not a saved head directory)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        module = build_head(config["head"], config["dims"], config["n_out"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path / CONFIG_FILE}: not a head config ({exc})") from exc
    state = load_file(str(path / WEIGHTS_FILE))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS_FILE}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    module.eval()
    return TrainedHead(module, config)
