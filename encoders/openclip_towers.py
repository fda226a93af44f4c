"""open_clip towers: start radalign from an existing CLIP model such as BiomedCLIP.

A model is named as open_clip names it:

* a built-in architecture (``ViT-B-32``, or one added with ``open_clip.add_model_config``);
* ``hf-hub:org/repo`` (config and weights from the Hugging Face hub or its cache);
* ``local-dir:/path`` or a plain directory holding ``open_clip_config.json`` (open_clip's
  local-dir format; radalign's ``save_pretrained`` writes one under ``image/`` and ``text/``).

Weights (``ImageTowerConfig.pretrained``; for the text tower, ``name@weights`` in
``TextTowerConfig.source`` with ``pretrained: true``) are an open_clip tag of a built-in model
(``laion2b_s34b_b79k``; needs the hub or its cache), a local checkpoint file (safetensors, or a
torch file read with ``weights_only=True``) or :data:`BUNDLED` (``"open_clip"``): the weights that
come with an ``hf-hub:``/``local-dir:`` model. ``None`` gives random weights.

Both towers hand radalign *pre-projection* features: open_clip's own projections
(``visual.proj``, a timm adapter's ``head.proj``, ``text_projection``, an HF tower's ``proj``) are
removed, because radalign puts its own heads on top and the text tower's pooled and word features
must share one width. Where the pooling itself projects (CLIP ResNets' attention pool, timm
``abs_attn``/``rot_attn`` pools) the pooled feature is that projected output.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from radalign.encoders.config import ImageTowerConfig, ModelConfig, TextTowerConfig
from radalign.encoders.image_tower import timm_blocks
from radalign.encoders.text_tower import (
    ReportTokenizer,
    _quiet,
    hf_blocks,
    merge_word_pieces,
    set_hf_checkpointing,
)
from radalign.encoders.tower import Tower
from radalign.encoders.weights import load_state_dict_file
from torch import nn

OPEN_CLIP_CONFIG = "open_clip_config.json"
BUNDLED = "open_clip"
"""``pretrained`` value meaning "the weights stored with this ``hf-hub:``/``local-dir:`` model"."""
HF_PREFIX, LOCAL_PREFIX = "hf-hub:", "local-dir:"
_CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_HF_FILES_MARK = "radalign_hf_text_files"
"""Set in a saved ``open_clip_config.json`` whose folder also holds the HF text config/tokenizer."""


# -- naming ------------------------------------------------------------------------------------
def split_pretrained(spec: str) -> tuple[str, str | None]:
    """``"ViT-B-32@laion2b_s34b_b79k"`` -> ``("ViT-B-32", "laion2b_s34b_b79k")``.

    An existing directory is never split (its path may contain ``@``).
    """
    if "@" not in spec or Path(spec.removeprefix(LOCAL_PREFIX)).exists():
        return spec, None
    name, weights = spec.split("@", 1)
    return name, weights or None


@dataclass
class OpenClipSource:
    """An open_clip model's architecture (``model_cfg``) and image preprocessing, as named."""

    name: str
    kind: str
    """``builtin``, ``hf-hub`` or ``local-dir``."""
    ident: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    directory: Path | None = None
    hf_files_here: bool = False

    def config_json(self) -> dict[str, Any]:
        """open_clip's local-dir ``open_clip_config.json`` content."""
        return {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}


def _offline_hint(what: str, exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0]
    return (
        f"could not load {what} ({type(exc).__name__}: {first}). Offline? Download it once "
        "(it is cached), point at a local-dir: folder or a local weights file, or build with "
        "random weights (image.pretrained: null / text.pretrained: false, or `--random-init`)."
    )


def read_source(name: str) -> OpenClipSource:
    """Look up an open_clip model's config (downloads nothing but ``hf-hub:`` JSON)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    defaults = merge_preprocess_dict(PreprocessCfg(), {})
    plain_dir = Path(name)
    if name.startswith(LOCAL_PREFIX) or (plain_dir / OPEN_CLIP_CONFIG).is_file():
        directory = Path(name.removeprefix(LOCAL_PREFIX))
        path = directory / OPEN_CLIP_CONFIG
        if not path.is_file():
            raise FileNotFoundError(
                f"open_clip model {name!r}: no {OPEN_CLIP_CONFIG} in {directory}"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if "model_cfg" not in data:
            raise ValueError(f"{path}: not open_clip's local-dir format (no 'model_cfg')")
        return OpenClipSource(
            name,
            "local-dir",
            str(directory),
            data["model_cfg"],
            merge_preprocess_dict(defaults, data.get("preprocess_cfg", {})),
            directory=directory,
            hf_files_here=bool(data.get(_HF_FILES_MARK)),
        )
    if name.startswith(HF_PREFIX):
        repo = name.removeprefix(HF_PREFIX)
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(repo, OPEN_CLIP_CONFIG)
        except Exception as exc:  # noqa: BLE001 - the hub raises many kinds here
            raise RuntimeError(_offline_hint(f"open_clip model {name!r}", exc)) from None
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return OpenClipSource(
            name,
            "hf-hub",
            repo,
            data["model_cfg"],
            merge_preprocess_dict(defaults, data.get("preprocess_cfg", {})),
        )
    model_cfg = open_clip.get_model_config(name.replace("/", "-"))
    if model_cfg is None:
        raise KeyError(
            f"unknown open_clip model {name!r}: not a built-in name (open_clip.list_models()), "
            f"an {HF_PREFIX}org/repo id, or a {LOCAL_PREFIX} folder with {OPEN_CLIP_CONFIG}"
        )
    return OpenClipSource(name, "builtin", name.replace("/", "-"), model_cfg, defaults)


def _find_checkpoint(directory: Path) -> Path | None:
    for fname in _CHECKPOINT_NAMES:
        if (directory / fname).is_file():
            return directory / fname
    return None


def resolve_weights(source: OpenClipSource, pretrained: str | None) -> Path | None:
    """The checkpoint file for ``pretrained`` (downloading a tag or hub weights if needed)."""
    import open_clip

    if not pretrained:
        return None
    if Path(pretrained).is_file():
        return Path(pretrained)
    if pretrained == BUNDLED and source.kind == "local-dir":
        found = _find_checkpoint(source.directory)  # type: ignore[arg-type]
        if found is None:
            raise FileNotFoundError(
                f"open_clip model {source.name!r}: no weights file in {source.directory} "
                f"(looked for {', '.join(_CHECKPOINT_NAMES[:3])}, ...)"
            )
        return found
    if pretrained == BUNDLED and source.kind == "hf-hub":
        from open_clip.pretrained import download_pretrained_from_hf

        try:
            return Path(download_pretrained_from_hf(source.ident))
        except Exception as exc:  # noqa: BLE001
            raise RuntimeError(_offline_hint(f"weights of {source.name!r}", exc)) from None
    if source.kind == "builtin":
        tag_cfg = open_clip.get_pretrained_cfg(source.ident, pretrained)
        if tag_cfg:
            from open_clip.transform import merge_preprocess_dict

            try:
                path = open_clip.download_pretrained(tag_cfg)
            except Exception as exc:  # noqa: BLE001
                raise RuntimeError(
                    _offline_hint(f"open_clip weights {source.name}@{pretrained}", exc)
                ) from None
            source.preprocess_cfg = merge_preprocess_dict(source.preprocess_cfg, tag_cfg)
            if tag_cfg.get("quick_gelu"):  # weights trained with QuickGELU (e.g. OpenAI's)
                source.model_cfg["quick_gelu"] = True
            return Path(path)
        tags = open_clip.list_pretrained_tags_by_model(source.ident)
        raise ValueError(
            f"{pretrained!r} is neither a local weights file nor an open_clip tag of "
            f"{source.name!r} (tags: {', '.join(tags) or 'none'})"
        )
    raise ValueError(
        f"{pretrained!r} is not a local weights file; for {source.name!r} use a file path, "
        f"{BUNDLED!r} for its own weights, or null for random weights"
    )


# -- building ----------------------------------------------------------------------------------
def _tower_cfg(source: OpenClipSource, *, image_size: int | None, drop_path: float) -> dict:
    cfg = copy.deepcopy(source.model_cfg)
    cfg.pop("custom_text", None)
    if "multimodal_cfg" in cfg:
        raise ValueError(f"open_clip model {source.name!r} is a CoCa model; radalign needs a CLIP")
    vision, text = cfg.setdefault("vision_cfg", {}), cfg.setdefault("text_cfg", {})
    is_timm = bool(vision.get("timm_model_name"))
    vision["timm_model_pretrained"] = False
    if text.get("hf_model_name"):
        text["hf_model_pretrained"] = False
        if source.hf_files_here:
            text["hf_model_name"] = str(source.directory)
    if image_size and not is_timm:
        vision["image_size"] = image_size
    if drop_path:
        if not is_timm:
            raise ValueError(
                f"image.drop_path_rate is only supported for open_clip timm vision towers, "
                f"not {source.name!r}"
            )
        vision["timm_drop_path"] = drop_path
    return cfg


def build_open_clip_tower(
    source: OpenClipSource,
    part: str,
    weights: Path | None,
    *,
    image_size: int | None = None,
    drop_path: float = 0.0,
) -> nn.Module:
    """open_clip's ``visual`` or ``text`` module alone, with the checkpoint's weights if given.

    Only the one tower is built (an HF text tower's config is not needed for images, and nothing
    is built twice); its part of the checkpoint is loaded strictly, after open_clip's own
    state-dict fix-ups (old CLIP key layout, position-embedding resizing).
    """
    from open_clip.model import _build_text_tower, _build_vision_tower

    cfg = _tower_cfg(source, image_size=image_size, drop_path=drop_path)
    quick_gelu = bool(cfg.get("quick_gelu", False))
    try:
        if part == "visual":
            tower = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu)
        else:
            tower = _quiet(_build_text_tower, cfg["embed_dim"], cfg["text_cfg"], quick_gelu)
    except OSError as exc:  # an HF text tower whose config is not reachable
        raise RuntimeError(_offline_hint(f"open_clip model {source.name!r}", exc)) from None
    if weights is not None:
        _load_tower_weights(tower, part, weights, source.name)
    if part == "visual" and image_size:
        _set_timm_input_size(tower, image_size)
    return tower


def _load_tower_weights(tower: nn.Module, part: str, path: Path, name: str) -> None:
    """Load ``part``'s weights from an open_clip checkpoint (safe reader, strict)."""
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    if path.suffix in (".npz", ".npy"):
        raise ValueError(f"{path}: big_vision .npz checkpoints are not supported here")
    state = convert_to_custom_text_state_dict(load_state_dict_file(path))
    holder = nn.Module()
    holder.add_module(part, tower)
    if part == "visual":
        resize_pos_embed(state, holder)
    else:
        resize_text_pos_embed(state, holder)
    prefix = part + "."
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = tower.state_dict()
    sub = {k: v for k, v in sub.items() if k in own or not k.endswith("position_ids")}
    problems = [f"missing {k}" for k in own if k not in sub]
    problems += [f"unexpected {k}" for k in sub if k not in own]
    problems += [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sub.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        raise ValueError(
            f"{path}: weights do not fit the {part} tower of open_clip model {name!r} "
            f"({len(problems)} problems, e.g. {problems[:3]})"
        )
    tower.load_state_dict(sub, strict=True)


def _set_timm_input_size(visual: nn.Module, image_size: int) -> None:
    from open_clip.timm_model import TimmModel

    if not isinstance(visual, TimmModel):
        return
    patch_embed = getattr(visual.trunk, "patch_embed", None)
    current = tuple(getattr(patch_embed, "img_size", None) or ())
    if patch_embed is not None and current != (image_size, image_size):
        visual.set_input_size(image_size)


def _strip_visual_projection(visual: nn.Module) -> None:
    """Remove open_clip's image projection where the pooled feature before it is reachable."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        visual.proj = None
    elif isinstance(visual, TimmModel):
        kept = [(n, m) for n, m in visual.head.named_children() if n == "pool"]
        visual.head = nn.Sequential(OrderedDict(kept))
        if not kept and getattr(visual.trunk, "num_classes", 0):
            visual.trunk.reset_classifier(0)  # the trunk's classifier was the projection


# -- image tower -------------------------------------------------------------------------------
class OpenClipImageTower(Tower):
    """``forward(x) -> (pooled [B, C], regions [B, C_local, h, w])`` from an open_clip visual.

    ``pooled`` is the visual's pooled feature before open_clip's projection (see the module
    docstring); ``regions`` the output of transformer block / stage ``config.local_layer``
    (``forward_intermediates``, not normalised, as the timm tower).

    Tower protocol (:class:`~radalign.encoders.tower.Tower`): ``blocks()`` are a CLIP ViT's
    ``transformer.resblocks``, a timm trunk's stages (as :class:`TimmImageTower`'s) or a CLIP
    ResNet's ``layer1..4``; ``set_grad_checkpointing`` is open_clip's (CLIP ResNets have none:
    a warning, and training goes on without); ``train_top_layers(n)`` trains the top n blocks.
    """

    def __init__(self, config: ImageTowerConfig, *, load_weights: bool = True) -> None:
        super().__init__()
        if config.pool_grid is not None:
            raise ValueError(
                "image.pool_grid is for timm CNN towers; open_clip towers pool as built"
            )
        if config.in_chans != 3:
            raise ValueError(f"open_clip image towers take 3 channels, not {config.in_chans}")
        self.config = config
        self.source = read_source(config.name)
        weights = resolve_weights(self.source, config.pretrained if load_weights else None)
        self.visual = build_open_clip_tower(
            self.source,
            "visual",
            weights,
            image_size=config.image_size,
            drop_path=config.drop_path_rate,
        )
        _strip_visual_projection(self.visual)
        if config.gradient_checkpointing:
            self.set_grad_checkpointing(True)
        pp = self.source.preprocess_cfg
        self.mean = [float(v) for v in (config.mean or pp["mean"])]
        self.std = [float(v) for v in (config.std or pp["std"])]
        with torch.no_grad():
            probe = torch.zeros(1, 3, config.image_size, config.image_size)
            was_training = self.training
            self.eval()
            pooled, regions = self.forward(probe)
            self.train(was_training)
        self.num_features = int(pooled.shape[1])
        self.local_channels = int(regions.shape[1])
        self.grid = (int(regions.shape[2]), int(regions.shape[3]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.visual.forward_intermediates(
            x, indices=[self.config.local_layer], intermediates_only=False
        )
        return out["image_features"], out["image_intermediates"][-1]

    def blocks(self) -> list[nn.Module]:
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        v = self.visual
        if isinstance(v, VisionTransformer):
            return list(v.transformer.resblocks)
        if isinstance(v, TimmModel):
            return timm_blocks(v.trunk)
        if isinstance(v, ModifiedResNet):
            return [v.layer1, v.layer2, v.layer3, v.layer4]
        raise ValueError(f"cannot find the blocks of open_clip image tower {type(v).__name__}")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        from open_clip.modified_resnet import ModifiedResNet

        if enable and isinstance(self.visual, ModifiedResNet):
            warnings.warn(
                "open_clip CLIP-ResNet image towers have no activation checkpointing; "
                "training without it",
                stacklevel=2,
            )
        self.visual.set_grad_checkpointing(enable)

    def save_backbone_files(self, directory: Path) -> None:
        """Write ``open_clip_config.json`` (architecture + preprocessing; weights go elsewhere)."""
        _write_config(Path(directory), self.source.config_json())


def _write_config(directory: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    (directory / OPEN_CLIP_CONFIG).write_text(text, encoding="utf-8")


# -- text tower --------------------------------------------------------------------------------
class BpeReportTokenizer:
    """Reports -> open_clip BPE ids plus each token's word (``-1`` for SOT/EOT, padding, punct).

    Rows are padded to the model's context length (CLIP's causal mask is sized for it);
    ``attention_mask`` covers SOT..EOT. Words are runs of letter/digit pieces of open_clip's
    pre-tokeniser with no space between them (``t12``, ``12`` stay one word; a piece's last BPE
    token carries the ``</w>`` marker), taken from the cleaned (lower-cased) text. Apart from
    ignoring literal special-token strings, ids are those of open_clip's tokenizer. Picklable.
    """

    def __init__(
        self,
        tokenizer,
        context_length: int,
        max_length: int | None = None,
        drop_punctuation: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.max_length = min(int(max_length or context_length), self.context_length)
        self.drop_punctuation = drop_punctuation
        self.specials = tuple(tokenizer.decoder[i] for i in tokenizer.all_special_ids)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.encode(texts)[0]

    def _pieces(self, text: str) -> tuple[list[int], list[int], list[str]]:
        tok = self.tokenizer
        clean = tok.clean_fn(text)
        ids: list[int] = []
        word_of: list[int] = []
        words: list[str] = []
        prev_end, prev_word = -1, False
        for m in tok.pat.finditer(clean):
            piece = m.group()
            if piece in self.specials:  # a literal "<end_of_text>" in a report is not a token
                continue
            is_word = any(c.isalnum() for c in piece)
            encoded = "".join(tok.byte_encoder[b] for b in piece.encode("utf-8"))
            piece_ids = [tok.encoder[t] for t in tok.bpe(encoded).split(" ")]
            if not is_word and self.drop_punctuation:
                w = -1
            elif is_word and prev_word and m.start() == prev_end:
                words[-1] += piece
                w = len(words) - 1
            else:
                words.append(piece)
                w = len(words) - 1
            ids += piece_ids
            word_of += [w] * len(piece_ids)
            prev_end, prev_word = m.end(), is_word
        return ids, word_of, words

    def encode(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
        """Tensors ``input_ids``, ``attention_mask``, ``word_index`` ``[B, T]`` and the words."""
        tok = self.tokenizer
        texts = [str(t) for t in texts]
        n = self.context_length
        input_ids = torch.zeros(len(texts), n, dtype=torch.long)
        attention = torch.zeros(len(texts), n, dtype=torch.long)
        word_index = torch.full((len(texts), n), -1, dtype=torch.long)
        all_words: list[list[str]] = []
        for b, text in enumerate(texts):
            ids, word_of, words = self._pieces(text)
            budget = self.max_length - 2
            ids, word_of = ids[:budget], word_of[:budget]
            kept = [w for w in word_of if w >= 0]
            words = words[: max(kept) + 1] if kept else []
            row = [tok.sot_token_id, *ids, tok.eot_token_id]
            input_ids[b, : len(row)] = torch.tensor(row)
            attention[b, : len(row)] = 1
            if word_of:
                word_index[b, 1 : 1 + len(word_of)] = torch.tensor(word_of)
            all_words.append(words)
        out = {"input_ids": input_ids, "attention_mask": attention, "word_index": word_index}
        return out, all_words


class OpenClipTextTower(Tower):
    """``forward(tokens) -> (pooled [B, H], words [B, W, H], word_mask [B, W])``.

    Native CLIP text transformers: ``pooled`` is open_clip's own pooling (the EOT token for
    ``argmax``) after ``ln_final``, before ``text_projection``; word features are the
    ``ln_final`` token features. Hugging Face text encoders (BiomedCLIP's PubMedBERT): ``pooled``
    is open_clip's pooler (``hf_pooler_type``) before its ``proj``; words merge the last hidden
    states' word pieces as :class:`~radalign.encoders.text_tower.HFTextTower` does.
    ``text.pooling`` does not apply (open_clip's pooling is kept).

    Tower protocol (:class:`~radalign.encoders.tower.Tower`): ``blocks()`` are the CLIP
    transformer's ``resblocks`` or the HF encoder's layers; ``set_grad_checkpointing`` is
    open_clip's (HF encoders: as :class:`~radalign.encoders.text_tower.HFTextTower`'s);
    ``train_top_layers(n)`` trains the top n blocks (embeddings and ``ln_final`` frozen).
    """

    def __init__(self, config: TextTowerConfig, *, load_weights: bool = True) -> None:
        super().__init__()
        from open_clip.hf_model import HFTextEncoder
        from open_clip.transformer import TextTransformer

        self.config = config
        name, tag = split_pretrained(config.source)
        self.source = read_source(name)
        wanted = None
        if config.pretrained and load_weights:
            wanted = tag or (BUNDLED if self.source.kind != "builtin" else None)
            if wanted is None:
                raise ValueError(
                    f"text.source {config.source!r} names no weights: use "
                    f"'{name}@<tag or weights file>' or text.pretrained: false"
                )
        weights = resolve_weights(self.source, wanted)
        text_cfg = self.source.model_cfg.get("text_cfg", {})
        if not text_cfg.get("hf_model_name") and text_cfg.get("hf_tokenizer_name"):
            raise ValueError(
                f"open_clip model {name!r}: text towers that pair a CLIP transformer with a "
                "Hugging Face tokenizer (SigLIP-style) are not supported"
            )
        self.text = build_open_clip_tower(self.source, "text", weights)
        ctx = int(text_cfg.get("context_length") or 77)
        if isinstance(self.text, HFTextEncoder):
            self.kind = "hf"
            self.text.proj = nn.Identity()
            self.tokenizer = ReportTokenizer(
                self._hf_tokenizer(text_cfg), min(config.max_length, ctx), config.drop_punctuation
            )
            hf_config = self.text.transformer.config
            self.num_features = int(getattr(hf_config, "hidden_size", None) or hf_config.d_model)
        elif isinstance(self.text, TextTransformer):
            if self.text.cls_emb is not None:
                raise ValueError(f"open_clip model {name!r}: CoCa-style text towers unsupported")
            from open_clip.tokenizer import SimpleTokenizer

            self.kind = "clip"
            self.text.text_projection = None
            self.text.output_tokens = True
            kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
            kwargs.pop("reduction_mask", None)
            bpe = SimpleTokenizer(context_length=ctx, **kwargs)
            self.tokenizer = BpeReportTokenizer(
                bpe, ctx, config.max_length, config.drop_punctuation
            )
            self.num_features = int(self.text.width)
        else:
            raise ValueError(f"unsupported open_clip text tower {type(self.text).__name__}")
        if config.gradient_checkpointing:
            self.set_grad_checkpointing(True)

    def blocks(self) -> list[nn.Module]:
        if self.kind == "hf":
            return hf_blocks(self.text.transformer)
        return list(self.text.transformer.resblocks)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.kind == "hf":  # open_clip's own calls a deprecated API and cannot switch off
            set_hf_checkpointing(self.text.transformer, enable)
        else:
            self.text.set_grad_checkpointing(enable)

    def _hf_tokenizer(self, text_cfg: dict[str, Any]):
        from transformers import AutoTokenizer

        src = self.source
        local = src.directory is not None and (src.directory / "tokenizer_config.json").is_file()
        name = str(src.directory) if local else text_cfg.get("hf_tokenizer_name")
        name = name or text_cfg["hf_model_name"]
        try:
            return AutoTokenizer.from_pretrained(name)
        except OSError as exc:
            raise RuntimeError(_offline_hint(f"the tokenizer {name!r}", exc)) from None

    def forward(
        self, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        if self.kind == "hf":
            out = self.text.transformer(input_ids=ids, attention_mask=mask)
            pooled, hidden = self.text.pooler(out, mask), out.last_hidden_state
        else:
            pooled, hidden = self.text(ids)
        words, word_mask = merge_word_pieces(hidden, tokens["word_index"], self.config.word_merge)
        return pooled, words, word_mask

    def save_backbone_files(self, directory: Path) -> None:
        """``open_clip_config.json``; for HF text encoders also their config and tokenizer."""
        directory = Path(directory)
        data = self.source.config_json()
        if self.kind == "hf":
            self.text.transformer.config.save_pretrained(directory)
            self.tokenizer.tokenizer.save_pretrained(directory)
            data[_HF_FILES_MARK] = True
        _write_config(directory, data)


# -- a whole radalign config -------------------------------------------------------------------
def open_clip_model_config(
    name: str,
    pretrained: str | None = None,
    *,
    embed_dim: int | None = None,
    local_dim: int | None = None,
) -> ModelConfig:
    """A radalign config whose two towers both come from the open_clip model ``name``.

    ``pretrained`` is a tag or a local weights file; left out, ``hf-hub:`` models and
    ``local-dir:`` folders holding weights use their own (:data:`BUNDLED`), built-in names get
    random weights. ``embed_dim``/``local_dim`` default to the open_clip model's ``embed_dim``.
    """
    source = read_source(name)
    size = source.model_cfg.get("vision_cfg", {}).get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"open_clip model {name!r}: non-square image size {size}")
        size = size[0]
    bundled = source.kind == "hf-hub" or (
        source.kind == "local-dir" and _find_checkpoint(source.directory) is not None  # type: ignore[arg-type]
    )
    if pretrained is None and bundled:
        pretrained = BUNDLED
    text_cfg = source.model_cfg.get("text_cfg", {})
    dim = int(source.model_cfg.get("embed_dim", 256))
    if pretrained and pretrained != BUNDLED and Path(pretrained).is_file():
        pretrained = str(Path(pretrained).resolve())
    label = name if pretrained in (None, BUNDLED) else f"{name}@{pretrained}"
    if pretrained is None:
        warnings.warn(
            f"open_clip model {name!r}: no weights named, towers are random", stacklevel=2
        )
    return ModelConfig(
        name=f"open_clip:{label}",
        description=f"image and report towers from the open_clip model {label}",
        embed_dim=embed_dim or dim,
        local_dim=local_dim or dim,
        image=ImageTowerConfig(
            backend="open_clip", name=name, pretrained=pretrained, image_size=int(size)
        ),
        text=TextTowerConfig(
            backend="open_clip",
            source=name if pretrained in (None, BUNDLED) else f"{name}@{pretrained}",
            pretrained=pretrained is not None,
            tokenizer_fallback=None,
            max_length=int(text_cfg.get("context_length") or 77),
        ),
    )
