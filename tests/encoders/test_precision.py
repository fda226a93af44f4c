"""bf16 detection, precision resolution, autocast, and the bf16-vs-fp32 inference tolerance.

The tolerance (forced bf16 on tiny inputs; bf16 is emulated and slow on CPUs without
AVX512-BF16/AMX, so the sizes stay small):

- every embedding row: cosine(bf16, fp32) >= 0.999 (measured worst 1 - 5e-5 on ``tiny`` and on
  the demo model's pretrained MiniLM report tower);
- image-report cosine similarities: |bf16 - fp32| <= 0.01 (measured <= 0.0025);
- zero-shot probabilities at the tiny model's logit scale (1/0.07): |bf16 - fp32| <= 0.03.
Outputs stay float32 and unit length.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from radalign.encoders import precision as P
from radalign.encoders.embed import embed_images, embed_texts

COSINE_MIN = 0.999
SIMILARITY_ABS = 0.01
PROBABILITY_ABS = 0.03
NATIVE = P.Bf16Support(True, "test: native bf16", 400.0, 100.0)
EMULATED = P.Bf16Support(False, "test: no AVX512-BF16/AMX", 1.3, 60.0)
REPORTS = [
    "Moderate left pleural effusion with adjacent atelectasis. No pneumothorax.",
    "The heart is enlarged. Mild pulmonary edema.",
    "No acute cardiopulmonary process.",
]


# ---------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("flags", "mkldnn", "timing", "native", "words"),
    [
        ({"avx2", "fma"}, True, (1.3, 60.0), False, "CPU has no AVX512-BF16/AMX: bf16 matmul 1.3"),
        ({"avx512f", "amx_bf16", "avx512_bf16"}, True, (500.0, 90.0), True, "AMX-BF16/AVX512"),
        ({"avx512_bf16"}, True, (40.0, 90.0), False, "but bf16 is slower"),
        ({"bf16", "asimd"}, False, (80.0, 70.0), True, "CPU has BF16"),  # Arm
        (None, True, (150.0, 90.0), True, "oneDNN"),  # no /proc/cpuinfo: oneDNN decides
        (None, False, (150.0, 90.0), False, "no bf16 support reported by oneDNN"),
    ],
)
def test_cpu_support_needs_the_instructions_and_the_speed(
    monkeypatch, flags, mkldnn, timing, native, words
):
    monkeypatch.setattr(P, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(P, "_mkldnn_bf16", lambda: mkldnn)
    monkeypatch.setattr(P, "_matmul_gflops", lambda: timing)
    got = P._cpu_support()
    assert got.native is native
    assert words in got.reason
    assert "GFLOP/s vs fp32" in got.reason
    assert (got.bf16_gflops, got.fp32_gflops) == timing


def test_cuda_support_reads_the_capability(monkeypatch):
    from contextlib import nullcontext

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "device", lambda d: nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    got = P._cuda_support(torch.device("cuda", 0))
    assert got.native and "H200 (compute capability 9.0) runs bf16 natively" in got.reason
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 0))
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    got = P._cuda_support(torch.device("cuda", 0))
    assert not got.native and "no native bf16" in got.reason


def test_real_cpu_check_is_cached_and_consistent():
    first = P.bf16_support("cpu")
    assert P.bf16_support(torch.device("cpu")) is first  # measured once per process
    assert first.bf16_gflops > 0 and first.fp32_gflops > 0
    auto = P.resolve_precision("auto", "cpu")
    assert auto.name == ("bf16" if first.native else "fp32")
    assert auto.reason == first.reason and auto.requested == "auto"


def test_other_devices_are_not_assessed():
    got = P._bf16_support("mps")
    assert not got.native and "not assessed on mps" in got.reason


# ---------------------------------------------------------------------- resolution
def test_auto_picks_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(P, "bf16_support", lambda device=None: NATIVE)
    got = P.resolve_precision("auto", "cpu")
    assert (got.name, got.mixed_precision, got.dtype) == ("bf16", "bf16", torch.bfloat16)
    assert got.as_dict() == {"requested": "auto", "used": "bf16", "reason": NATIVE.reason}
    monkeypatch.setattr(P, "bf16_support", lambda device=None: EMULATED)
    got = P.resolve_precision("AUTO", "cpu")
    assert (got.name, got.mixed_precision, got.dtype) == ("fp32", "no", torch.float32)
    assert got.reason == EMULATED.reason


def test_explicit_bf16_is_honoured_with_a_warning_where_not_native(monkeypatch):
    monkeypatch.setattr(P, "bf16_support", lambda device=None: EMULATED)
    with pytest.warns(P.SlowPrecisionWarning, match="not native"):
        got = P.resolve_precision("bf16", "cpu")
    assert got.name == "bf16" and "not native" in got.reason
    monkeypatch.setattr(P, "bf16_support", lambda device=None: NATIVE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", "cpu").name == "bf16"


def test_fp32_needs_no_detection_and_bad_names_fail(monkeypatch):
    def boom(device=None):
        raise AssertionError("fp32 must not probe the hardware")

    monkeypatch.setattr(P, "bf16_support", boom)
    for req in ("fp32", "no", " FP32 "):
        got = P.resolve_precision(req, "cpu")
        assert got.name == "fp32" and got.mixed_precision == "no"
    assert P.resolve_precision(got) is got  # a resolved Precision passes through
    with pytest.warns(P.SlowPrecisionWarning):
        assert P.resolve_precision("fp16", "cpu").mixed_precision == "fp16"
    with pytest.raises(ValueError, match="auto, bf16, fp32, no, fp16"):
        P.resolve_precision("int8", "cpu")


def test_autocast_bf16_and_fp32_shields_an_outer_autocast():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with P.autocast("cpu", P.Precision("bf16", "test")):
        assert (a @ b).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), P.autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32


# ---------------------------------------------------------------------- CLI option
def test_every_inference_command_takes_precision():
    from radalign import cli_options
    from radalign.cli import build_parser

    assert cli_options.PRECISION_CHOICES == P.CLI_CHOICES
    parser = build_parser()
    argvs = [
        ["embed", "--model", "m", "--images", "x", "--out", "o.parquet"],
        ["zeroshot", "--model", "m", "scan.png"],
        ["index", "build", "--model", "m", "--source", "s", "--out", "o"],
        ["index", "add", "--model", "m", "--source", "s", "--index", "i"],
        ["retrieve", "--model", "m", "--index", "i", "scan.png"],
        ["flag", "--model", "m", "--index", "i", "pairs.csv"],
    ]
    for argv in argvs:
        assert parser.parse_args(argv).precision == "auto", argv
        assert parser.parse_args([*argv, "--precision", "bf16"]).precision == "bf16", argv
    with pytest.raises(SystemExit):
        parser.parse_args([*argvs[0], "--precision", "fp8"])
    for argv in argvs:  # the shared model options: --device and --batch-size everywhere
        got = parser.parse_args([*argv, "--device", "cpu", "--batch-size", "4"])
        assert (got.device, got.batch_size) == ("cpu", 4), argv
        assert parser.parse_args(argv).device is None, argv


def test_resolve_precision_option_says_what_runs(capsys):
    from radalign.cli_options import resolve_precision_option

    got = resolve_precision_option(argparse.Namespace(precision="fp32"), "cpu")
    assert got.name == "fp32"
    assert "precision: fp32 (requested)" in capsys.readouterr().err


# ---------------------------------------------------------------------- tolerance
@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for i in range(3):
        blob = np.exp(-((yy - 20 - 10 * i) ** 2 + (xx - 32) ** 2) / 150.0)
        img = 0.6 * blob + 0.3 * rng.random((64, 64))
        Image.fromarray((img / img.max() * 255).astype(np.uint8)).save(root / f"s{i}.png")
    return sorted(root.glob("*.png"))


def _bf16(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.SlowPrecisionWarning)
        return fn(*args, **kwargs, precision="bf16")


def _rows_agree(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(axis=1)
    assert cos.min() >= COSINE_MIN, cos


@pytest.mark.slow  # bf16 is emulated on most CPUs: about 6 s here
def test_bf16_embeddings_within_tolerance(tiny_model, scans):
    img32 = embed_images(tiny_model, scans, progress=False, precision="fp32")
    img16 = _bf16(embed_images, tiny_model, scans, progress=False)
    txt32 = embed_texts(tiny_model, REPORTS, progress=False, precision="fp32")
    txt16 = _bf16(embed_texts, tiny_model, REPORTS, progress=False)
    assert (img32.precision, img16.precision, txt16.precision) == ("fp32", "bf16", "bf16")
    _rows_agree(img32.vectors, img16.vectors)
    _rows_agree(txt32.vectors, txt16.vectors)
    sim32, sim16 = img32.vectors @ txt32.vectors.T, img16.vectors @ txt16.vectors.T
    assert np.abs(sim32 - sim16).max() <= SIMILARITY_ABS
    # fp32 stays exactly what it was before precisions existed
    one = embed_texts(tiny_model, REPORTS[:1], progress=False, precision="fp32").vectors
    with torch.inference_mode():
        plain = tiny_model.encode_text(tiny_model.tokenize(REPORTS[:1])).numpy()
    np.testing.assert_array_equal(one, plain)


def test_bf16_zero_shot_within_tolerance(tiny_model):
    from radalign.zeroshot.classifier import PromptClassifier
    from radalign.zeroshot.prompts import PromptSet

    prompts = PromptSet(
        "two",
        {
            "Pleural Effusion": {"positive": [REPORTS[0]], "negative": ["No pleural effusion."]},
            "Cardiomegaly": {"positive": [REPORTS[1]], "negative": ["Normal heart size."]},
        },
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, tiny_model.config.embed_dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fp32 = PromptClassifier(tiny_model, prompts, precision="fp32")
    bf16 = _bf16(PromptClassifier, tiny_model, prompts)
    assert bf16.precision.name == "bf16" and bf16.positive_vectors.dtype == np.float32
    _rows_agree(fp32.positive_vectors, bf16.positive_vectors)
    diff = np.abs(fp32.predict(x).to_numpy() - bf16.predict(x).to_numpy())
    assert diff.max() <= PROBABILITY_ABS, diff
