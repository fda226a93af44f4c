"""``radalign.heads``: small models trained on frozen embeddings (linear probe, early/late fusion, patient timelines) and embedding alignment."""
