"""Loading a model by name, config file, saved directory or open_clip id: ``radalign.load``."""

from __future__ import annotations

import dataclasses
import os

import torch
from radalign.encoders.checkpoint import is_pretrained_dir, load_pretrained
from radalign.encoders.model import RadAlignModel
from radalign.encoders.registry import get_model_config

OPEN_CLIP_PREFIX = "open_clip:"


def load(name_or_dir: str | os.PathLike, *, pretrained: bool = True) -> RadAlignModel:
    """A model from a ``save_pretrained`` directory, a registered name, a config file, or
    ``open_clip:<name>[@weights]`` (an open_clip built-in, ``hf-hub:`` id or ``local-dir:``
    folder, e.g. ``open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``).

    ``pretrained=False`` builds a named config with random weights in both towers and needs no
    hub (a hub-referencing text tower falls back to its stored architecture). Randomly
    initialised weights are drawn from a fixed seed, so the same name gives the same model.
    """
    if is_pretrained_dir(name_or_dir):
        return load_pretrained(name_or_dir)
    name = str(name_or_dir)
    if name.startswith(OPEN_CLIP_PREFIX):
        from radalign.encoders.openclip_towers import open_clip_model_config, split_pretrained

        config = open_clip_model_config(*split_pretrained(name[len(OPEN_CLIP_PREFIX) :]))
    else:
        config = get_model_config(name_or_dir)
    if not pretrained:
        config = dataclasses.replace(
            config,
            image=dataclasses.replace(config.image, pretrained=None),
            text=dataclasses.replace(config.text, pretrained=False),
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return RadAlignModel(config)
