"""Validation during pretraining: val loss, in-batch and full-split image<->report Recall@K."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from radalign.encoders.ranking import partner_ranks
from radalign.pretrain.pair_dataset import PairCollator, PairDataset
from torch.utils.data import DataLoader

KS = (1, 5, 10)


def recall_at_k(similarity: torch.Tensor, ks=KS) -> dict[int, float]:
    """Share of rows whose matching column (the diagonal) ranks within the top k; ties count
    against the row, as in :mod:`radalign.retrieval.evaluate` (the same ranking function)."""
    rank = partner_ranks(similarity.detach().float().cpu().numpy())
    return {k: float(np.mean(rank < k)) for k in ks}


@torch.inference_mode()
def validate(model, records, config, text_cache=None) -> dict[str, float]:
    """Loss and Recall@K on up to ``config.data.max_val_pairs`` pairs of the val split
    (``text_cache``: the frozen report tower's features, see :mod:`radalign.encoders.frozen_text`)."""
    from radalign.pretrain.objective import Objective

    was_training = model.training
    model.eval()
    records = list(records)[: config.data.max_val_pairs]
    dataset = PairDataset(records, model.transform(train=False), window=config.data.window)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.data.num_workers,
        collate_fn=PairCollator(model.tokenizer),
    )
    objective = Objective(dataclasses.replace(config.loss, gather=False))
    device = model.device
    images, texts, sums, batches = [], [], {}, 0
    in_batch = {k: 0.0 for k in KS}
    for batch in loader:
        if "pixels" not in batch or len(batch["index"]) < 2:
            continue
        tokens = {k: v.to(device) for k, v in batch["tokens"].items()}
        cached = text_cache(batch["reports"], device) if text_cache is not None else None
        img, txt = model(batch["pixels"].to(device), tokens, cached)
        _, parts = objective(img, txt, model.logit_scale)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        for k, v in recall_at_k(img.embedding @ txt.embedding.T).items():
            in_batch[k] += v
        batches += 1
        images.append(img.embedding.float().cpu())
        texts.append(txt.embedding.float().cpu())
    model.train(was_training)
    if not batches:
        return {}
    out = {key: value / batches for key, value in sums.items()}
    out.update({f"inbatch_i2t_R@{k}": v / batches for k, v in in_batch.items()})
    sim = torch.cat(images) @ torch.cat(texts).T
    out.update({f"i2t_R@{k}": v for k, v in recall_at_k(sim).items()})
    out.update({f"t2i_R@{k}": v for k, v in recall_at_k(sim.T).items()})
    out["n_pairs"] = float(sim.shape[0])
    return out
