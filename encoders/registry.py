"""Named model configs: JSON/YAML files shipped in ``model_configs/`` plus a user's own.

A user adds configs by pointing ``RADALIGN_MODEL_CONFIGS`` at files or folders (``os.pathsep``
separated), by calling :func:`register_config_path`, or by passing a config file's path wherever a
model name is accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

from radalign.encoders.config import ModelConfig, from_dict, read_config_file

BUILTIN_DIR = Path(__file__).with_name("model_configs")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_extra_paths: list[Path] = []


def register_config_path(path: str | os.PathLike) -> None:
    """Add a config file or a folder of config files to the registry for this process."""
    _extra_paths.append(Path(path))


def _config_files() -> dict[str, Path]:
    """Name -> file; user paths override built-ins of the same name."""
    sources = [BUILTIN_DIR]
    env = os.environ.get("RADALIGN_MODEL_CONFIGS", "")
    sources += [Path(p) for p in env.split(os.pathsep) if p]
    sources += _extra_paths
    files: dict[str, Path] = {}
    for src in sources:
        candidates = sorted(src.iterdir()) if src.is_dir() else [src]
        for f in candidates:
            if f.suffix.lower() in CONFIG_SUFFIXES and f.is_file():
                files[str(read_config_file(f).get("name") or f.stem)] = f
    return files


def list_models() -> dict[str, ModelConfig]:
    """All registered model configs by name, sorted."""
    return {name: load_config_file(path) for name, path in sorted(_config_files().items())}


def load_config_file(path: str | os.PathLike) -> ModelConfig:
    """Read one model config file (JSON or YAML)."""
    path = Path(path)
    data = read_config_file(path)
    data.setdefault("name", path.stem)
    try:
        return from_dict(ModelConfig, data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def get_model_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """A registered name, or the path of a config file."""
    path = Path(name_or_path)
    if path.suffix.lower() in CONFIG_SUFFIXES and path.is_file():
        return load_config_file(path)
    files = _config_files()
    if str(name_or_path) not in files:
        raise KeyError(
            f"unknown model {str(name_or_path)!r}; known: {', '.join(sorted(files))} "
            "(or give a config file path, or a directory written by save_pretrained)"
        )
    return load_config_file(files[str(name_or_path)])
