"""Save and load trained heads: ``head.safetensors`` + ``config.json`` in one directory,
written atomically; nothing is unpickled on load.

Fusion heads and linear probes load as :class:`~radalign.heads.train.TrainedHead`, timeline
heads (``"head": "timeline"``) as :class:`~radalign.heads.timeline.TimelineFit`. Given the
fingerprint of the model whose embeddings it will read, :func:`load_head` refuses a head
trained on another model's embeddings.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from radalign.encoders.atomic import atomic_dir
from radalign.heads.blocks import build_head
from radalign.heads.timeline import TimelineFit, build_timeline
from radalign.heads.train import TrainedHead
from safetensors.torch import load_file, save_file

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_fingerprint",
    "load_head",
    "metrics_json",
    "save_head",
    "write_head_files",
]

WEIGHTS_FILE = "head.safetensors"
CONFIG_FILE = "config.json"


def save_head(
    head: TrainedHead | TimelineFit, out: str | os.PathLike, extra: dict | None = None
) -> Path:
    """Write ``out/`` (replacing it atomically) with the weights and config (+ ``extra``)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_head_files(head, tmp, extra)
    return out


def write_head_files(
    head: TrainedHead | TimelineFit, directory: Path, extra: dict | None = None
) -> None:
    """Write the two files into an existing (temporary) directory; see :func:`save_head`."""
    state = {k: v.detach().contiguous().cpu() for k, v in head.module.state_dict().items()}
    config = {**head.config, **(extra or {})}
    save_file(state, str(Path(directory) / WEIGHTS_FILE))
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))


def check_fingerprint(config: dict[str, Any], fingerprint: str, where: str | os.PathLike) -> None:
    """``ValueError`` unless the head's recorded model fingerprint is ``fingerprint``."""
    got = config.get("fingerprint")
    if not got:
        raise ValueError(f"{where}: the head records no model fingerprint; cannot check it "
                         "matches this model (retrain it with radalign probe/timeline)")  # fmt: skip
    if got != fingerprint:
        raise ValueError(f"{where}: head trained on embeddings from another model (fingerprint "
                         f"{got!r}, this model's is {fingerprint!r}); use that model or retrain "
                         "the head")  # fmt: skip


def load_head(path: str | os.PathLike, fingerprint: str | None = None) -> TrainedHead | TimelineFit:
    """Rebuild a head saved by :func:`save_head`; ``FileNotFoundError``/``ValueError`` if bad,
    or (given ``fingerprint``) if it was trained on another model's embeddings."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing (not a saved head directory)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        timeline = config["head"] == "timeline"
        module = (build_timeline(config) if timeline
                  else build_head(config["head"], config["dims"], config["n_out"]))  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path / CONFIG_FILE}: not a head config ({exc})") from exc
    if fingerprint is not None:
        check_fingerprint(config, fingerprint, path)
    state = load_file(str(path / WEIGHTS_FILE))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS_FILE}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    module.eval()
    return (TimelineFit if timeline else TrainedHead)(module, config)


def metrics_json(metrics: dict[str, Any]) -> str:
    """``metrics`` as strict JSON: numpy scalars as numbers, NaN/inf as ``null``."""
    return json.dumps(_plain(metrics), indent=2)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
