"""Training precision: ``mixed_precision: auto`` resolution, run.json, and the losses in fp32.

Tolerance: on the ``tiny`` model (batch 4, eval mode) the global, local and token losses of a
bf16-autocast forward are within 2e-2 relative of the fp32 forward (measured <= 2e-3).
"""

from __future__ import annotations

import json
import types
import warnings

import pytest
import torch
from radalign.encoders import precision as P
from radalign.encoders.model import ImageFeatures, TextFeatures
from radalign.pretrain.config import LossConfig, TrainConfig
from radalign.pretrain.objective import Objective

LOSS_RTOL = 2e-2
REPORTS = [
    "Moderate left pleural effusion with adjacent atelectasis.",
    "No acute cardiopulmonary process. Normal heart size.",
    "Right upper lobe consolidation. Small right effusion.",
    "The heart is enlarged with mild pulmonary edema.",
]


def _objective() -> Objective:
    return Objective(LossConfig(local_weight=1.0, token_weight=1.0, gather=False))


def test_default_is_auto():
    assert TrainConfig().mixed_precision == "auto"


def test_losses_run_in_fp32_under_autocast(one_thread):
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    emb2 = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    image = ImageFeatures(emb.bfloat16(), torch.randn(4, 9, 8, generator=g).bfloat16(), (3, 3))
    words = torch.randn(4, 5, 8, generator=g).bfloat16()
    text = TextFeatures(emb2.bfloat16(), words, torch.ones(4, 5, dtype=torch.bool))
    scale = torch.tensor(2.659)
    objective = _objective()
    plain_total, plain = objective(image, text, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = objective(image, text, scale)
    assert total.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in parts.values())
    for key, value in plain.items():  # bit-identical: autocast does not reach the losses
        assert torch.equal(parts[key], value), key
    assert torch.equal(total, plain_total)


def test_bf16_losses_within_tolerance(tiny_model):
    objective = _objective()
    size = tiny_model.config.image.image_size
    pixels = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = tiny_model.tokenize(REPORTS)
    with torch.no_grad():
        _, fp32 = objective(*tiny_model(pixels, tokens), tiny_model.logit_scale)
        with P.autocast("cpu", P.Precision("bf16", "test")):
            image, text = tiny_model(pixels, tokens)
            _, bf16 = objective(image, text, tiny_model.logit_scale)
    assert image.embedding.dtype == torch.bfloat16  # the towers did run in bf16
    for key in ("global", "local", "token", "loss"):
        assert float(bf16[key]) == pytest.approx(float(fp32[key]), rel=LOSS_RTOL), key


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("requested", "support", "expected"),
    [
        ("auto", P.Bf16Support(True, "test: native"), "bf16"),
        ("auto", P.Bf16Support(False, "test: emulated"), "no"),
        ("bf16", P.Bf16Support(False, "test: emulated"), "bf16"),
        ("no", None, "no"),
        ("fp32", None, "no"),
    ],
)
def test_trainer_gives_accelerate_the_resolved_precision(monkeypatch, requested, support, expected):
    from radalign.pretrain import trainer

    seen = {}

    def fake_accelerator(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(trainer, "Accelerator", fake_accelerator)
    monkeypatch.setattr(P, "bf16_support", lambda device=None: support)
    with warnings.catch_warnings(), pytest.raises(_Stop):
        warnings.simplefilter("ignore", P.SlowPrecisionWarning)
        trainer.pretrain(TrainConfig(mixed_precision=requested))
    assert seen["mixed_precision"] == expected


def test_trainer_refuses_an_unknown_precision():
    from radalign.pretrain.trainer import pretrain

    with pytest.raises(ValueError, match="precision must be one of"):
        pretrain(TrainConfig(mixed_precision="bf17"))


def test_run_json_records_requested_used_and_why(tmp_path):
    from radalign.pretrain.trainer import _write_run_info

    accelerator = types.SimpleNamespace(num_processes=1, device="cpu", mixed_precision="no")
    used = P.Precision("fp32", "CPU has no AVX512-BF16/AMX: ...", "auto")
    _write_run_info(accelerator, tmp_path / "run.json", None, used)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["mixed_precision"] == "no"
    assert info["precision"] == {
        "requested": "auto",
        "used": "fp32",
        "reason": "CPU has no AVX512-BF16/AMX: ...",
    }
