"""Typed pretraining config: YAML files in ``configs/`` plus ``key=value`` overrides.

Every field has a default; an unknown key fails at start with the list of valid keys. The
resolved config is saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from radalign.encoders.config import _valid_keys, from_dict, read_config_file


@dataclass
class DataConfig:
    source: str = "phantoms"
    """A MIMIC-CXR root (DICOM or JPG layout), an IU X-ray root, a CSV/Parquet manifest, or
    ``phantoms`` (the synthetic set, generated into ``phantoms_dir`` when missing)."""
    phantoms_dir: str = "runs/phantoms"
    phantoms_n: int = 2000
    phantoms_seed: int = 0
    phantoms_layout: str = "jpg"
    layout: str = "auto"
    views: list[str] | None = field(default_factory=lambda: ["PA", "AP"])
    section: str = "findings+impression"
    one_image_per_study: bool = False
    label_text: bool = False
    train_split: str = "train"
    val_split: str = "val"
    max_val_pairs: int = 1000
    """Cap on the full-split validation retrieval (it embeds every val pair)."""
    window: str = "header"
    num_workers: int = 2


@dataclass
class LossConfig:
    global_kind: str = "clip"
    """``clip`` (symmetric InfoNCE) or ``siglip``."""
    global_weight: float = 1.0
    gather: bool = True
    """Cross-process negatives through an autograd-aware all-gather."""
    local_rows: bool = False
    """Each process scores only its own rows against all gathered columns (saves memory)."""
    local_weight: float = 1.0
    """GLoRIA word-region loss; 0 turns it off."""
    local_form: str = "paper"
    local_tau1: float = 4.0
    local_tau2: float = 5.0
    local_tau3: float = 10.0
    local_aggregation: str = "sum"
    local_normalize: bool = False
    local_chunk: int = 8
    """Reports scored at once by the word-region loss (bounds its peak memory)."""
    local_gather: bool = False
    """Word-region loss against all processes' pairs (default: each process's own batch)."""
    token_weight: float = 0.0
    """MGCA-style in-pair token alignment; 0 turns it off."""
    flip_negatives: bool = False
    """Laterality hard negatives: each training report that names a side also enters, with left
    and right swapped, as one extra negative for its own image in the image→report InfoNCE."""


@dataclass
class OptimConfig:
    lr: float = 2e-4
    text_lr: float | None = None
    """Learning rate of the report backbone (``None``: same as ``lr``)."""
    freeze_text: bool = False
    """Freeze the whole report backbone (its features are then computed once per report)."""
    text_trainable_layers: int | None = None
    """Train only the top N transformer layers of the report backbone (``None``: all)."""
    cache_text_bottom: bool = False
    """With ``text_trainable_layers``: compute the frozen layers below the top N once per report
    (eval mode, no dropout) and run only the top N each step."""
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclass
class AugmentSettings:
    scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    rotate_deg: float = 5.0
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False


@dataclass
class TrainConfig:
    model: str = "demo-resnet18-minilm"
    """A registered model name, a model config file, or a saved model directory."""
    random_init: bool = False
    output_dir: str = "runs/demo"
    seed: int = 0
    batch_size: int = 32
    """Per process; the global batch is this times processes times grad_accum."""
    grad_accum: int = 1
    max_steps: int = 300
    mixed_precision: str = "auto"
    """``auto`` (bf16 where the hardware runs it natively and fast: Ampere+ GPUs, CPUs with
    AMX/AVX512-BF16; else fp32), ``bf16``, ``fp16`` or ``no``/``fp32``. The losses, logits and
    logit scale stay float32 either way; ``run.json`` records what ran and why."""
    gradient_checkpointing: bool = False
    log_every: int = 10
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)


def config_path(name_or_path: str | Path) -> Path:
    """A config file: an existing path, or the name of one shipped in ``configs/`` (``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from importlib.resources import files

    shipped = Path(str(files("radalign.configs"))) / f"{path.stem}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"no config file {name_or_path} (shipped configs: demo, demo-20min, mimic-cxr)"
    )


def load_train_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Config from an optional YAML file (or shipped config name) plus ``key=value`` overrides."""
    data: dict[str, Any] = read_config_file(config_path(path)) if path else {}
    valid = _valid_keys(TrainConfig)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key = item.split("=", 1)[0]
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}. Valid keys: {', '.join(valid)}")
    merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
    return from_dict(TrainConfig, OmegaConf.to_container(merged))  # type: ignore[arg-type]


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    from radalign.encoders.atomic import atomic_write

    with atomic_write(path, mode="w", encoding="utf-8") as fh:
        fh.write(OmegaConf.to_yaml(OmegaConf.structured(config)))
