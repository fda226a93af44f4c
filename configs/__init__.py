"""Run configs shipped with radalign (``radalign pretrain --config demo``)."""
