"""Numeric precision: bf16 where the hardware runs it natively and fast, fp32 elsewhere.

``resolve_precision(requested, device)`` turns a request (``auto``, ``bf16``, ``fp32``/``no``,
``fp16``) into the :class:`Precision` to use, with the reason.  ``auto`` picks bf16 only where
:func:`bf16_support` finds it native and fast:

- CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` on a GPU of compute
  capability 8.0 or newer (Ampere, Hopper, ...).
- CPU: a bf16 instruction set (``amx_bf16`` / ``avx512_bf16`` in ``/proc/cpuinfo`` on x86,
  ``bf16`` on Arm; oneDNN's own check where the flags cannot be read) *and* a small timed matmul
  (256x256, one thread) in which bf16 is not slower than fp32.  Without those instructions
  PyTorch emulates bf16 GEMMs, which runs them tens of times slower than fp32.
- anything else (MPS, XPU, ...): not assessed, so ``auto`` means fp32 there.

The check runs once per process and device.  An explicit ``bf16`` is honoured everywhere, with a
:class:`SlowPrecisionWarning` where it is not native.  ``autocast(device, precision)`` is the
context for inference: ``torch.autocast`` with bfloat16 (or float16) for the reduced precisions,
and autocast *disabled* for fp32, so that an enclosing autocast cannot leak in.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "CLI_CHOICES",
    "REQUESTS",
    "Bf16Support",
    "Precision",
    "SlowPrecisionWarning",
    "autocast",
    "bf16_support",
    "resolve_precision",
]

REQUESTS = ("auto", "bf16", "fp32", "no", "fp16")
"""What a config or caller may ask for (``no`` is Accelerate's name for fp32)."""
CLI_CHOICES = ("auto", "bf16", "fp32")
"""The choices of the inference commands' ``--precision`` (see ``radalign/cli_options.py``)."""
FAST_RATIO = 0.9
"""bf16 counts as fast when its matmul throughput is at least this share of fp32's (the slack
absorbs timing noise; on AMX or AVX512-BF16 hardware bf16 is well above 1)."""
_CPU_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "BF16"}
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
_ACCELERATE = {"bf16": "bf16", "fp32": "no", "fp16": "fp16"}


class SlowPrecisionWarning(RuntimeWarning):
    """A reduced precision was asked for where the hardware does not run it natively."""


@dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 is native and fast on a device, why, and the timing behind it (CPU)."""

    native: bool
    reason: str
    bf16_gflops: float | None = None
    fp32_gflops: float | None = None


@dataclass(frozen=True)
class Precision:
    """The precision to run in: ``name`` is ``bf16``, ``fp32`` or ``fp16``."""

    name: str
    reason: str
    requested: str = "auto"

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def mixed_precision(self) -> str:
        """Accelerate's name for it: ``bf16``, ``fp16`` or ``no``."""
        return _ACCELERATE[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    def as_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "used": self.name, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def bf16_support(device: str | torch.device | None = None) -> Bf16Support:
    """Whether bf16 is native and fast on ``device`` (default: CUDA if present, else CPU).

    Measured once per process and device (see the module docstring)."""
    return _bf16_support(str(_device(device)))


@functools.cache
def _bf16_support(device: str) -> Bf16Support:
    dev = torch.device(device)
    if dev.type == "cuda":
        return _cuda_support(dev)
    if dev.type == "cpu":
        return _cpu_support()
    return Bf16Support(False, f"bf16 speed is not assessed on {dev.type}; fp32 unless asked")


def _cuda_support(dev: torch.device) -> Bf16Support:
    name = torch.cuda.get_device_name(dev)
    major, minor = torch.cuda.get_device_capability(dev)
    with torch.cuda.device(dev):
        try:
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation flag
            supported = torch.cuda.is_bf16_supported()
    cc = f"compute capability {major}.{minor}"
    if supported and major >= 8:
        return Bf16Support(True, f"{name} ({cc}) runs bf16 natively")
    return Bf16Support(False, f"{name} ({cc}) has no native bf16 (needs 8.0 or newer)")


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.lower().split())
    return None


def _mkldnn_bf16() -> bool | None:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def _matmul_gflops(n: int = 256, reps: int = 2) -> tuple[float, float]:
    """(bf16, fp32) GFLOP/s of an ``n x n`` matmul on one CPU thread, best of ``reps``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy core makes multi-threaded timings jump; one is steady
    try:
        out = []
        with torch.inference_mode():
            gen = torch.Generator().manual_seed(0)
            base_a = torch.randn(n, n, generator=gen)
            base_b = torch.randn(n, n, generator=gen)
            for dtype in (torch.bfloat16, torch.float32):
                a, b = base_a.to(dtype), base_b.to(dtype)
                a @ b  # warm-up
                best = float("inf")
                for _ in range(reps):
                    start = time.perf_counter()
                    a @ b
                    best = min(best, time.perf_counter() - start)
                out.append(2 * n**3 / max(best, 1e-9) / 1e9)
    finally:
        torch.set_num_threads(threads)
    return out[0], out[1]


def _cpu_support() -> Bf16Support:
    flags = _cpu_flags()
    if flags is not None:
        isa = [label for flag, label in _CPU_BF16_FLAGS.items() if flag in flags]
        source = "/".join(isa)
    else:
        isa = ["oneDNN"] if _mkldnn_bf16() else []
        source = "oneDNN bf16"
    bf16, fp32 = _matmul_gflops()
    timing = f"bf16 matmul {bf16:.3g} GFLOP/s vs fp32 {fp32:.3g} GFLOP/s"
    if not isa:
        missing = "AVX512-BF16/AMX" if flags is not None else "bf16 support reported by oneDNN"
        return Bf16Support(False, f"CPU has no {missing}: {timing}", bf16, fp32)
    if bf16 < FAST_RATIO * fp32:
        return Bf16Support(False, f"CPU has {source} but bf16 is slower: {timing}", bf16, fp32)
    return Bf16Support(True, f"CPU has {source}: {timing}", bf16, fp32)


def resolve_precision(
    requested: str | Precision = "auto", device: str | torch.device | None = None
) -> Precision:
    """The :class:`Precision` to use on ``device`` for ``requested`` (see the module docstring).

    ``auto``: bf16 where native and fast, else fp32; ``bf16`` and ``fp16``: honoured, warning
    (:class:`SlowPrecisionWarning`) where not native; ``fp32`` / ``no``: fp32."""
    if isinstance(requested, Precision):
        return requested
    req = str(requested).strip().lower()
    if req not in REQUESTS:
        raise ValueError(f"precision must be one of {', '.join(REQUESTS)}, not {requested!r}")
    if req in ("fp32", "no"):
        return Precision("fp32", "requested", req)
    dev = _device(device)
    if req == "fp16":
        if dev.type == "cpu":
            warnings.warn(
                "fp16 requested on CPU, where it is emulated and slow; use bf16 or fp32",
                SlowPrecisionWarning,
                stacklevel=2,
            )
            return Precision("fp16", "requested; not native on CPU", req)
        return Precision("fp16", "requested", req)
    support = bf16_support(dev)
    if req == "auto":
        return Precision("bf16" if support.native else "fp32", support.reason, req)
    if not support.native:
        warnings.warn(
            f"bf16 requested on {dev} where it is not native ({support.reason}); "
            "honoured, but expect it to be slow",
            SlowPrecisionWarning,
            stacklevel=2,
        )
        return Precision("bf16", f"requested; not native: {support.reason}", req)
    return Precision("bf16", f"requested; {support.reason}", req)


def autocast(device: str | torch.device | None, precision: str | Precision = "auto"):
    """Context for inference in ``precision`` on ``device`` (``precision`` may be a request,
    resolved with :func:`resolve_precision`): ``torch.autocast`` with bfloat16 / float16, or
    autocast disabled for fp32."""
    dev = _device(device)
    precision = resolve_precision(precision, dev)
    available = getattr(torch.amp, "is_autocast_available", lambda t: t in ("cpu", "cuda"))
    if not available(dev.type):
        if precision.reduced:
            raise ValueError(f"{precision.name} autocast is not available on {dev.type}")
        return contextlib.nullcontext()
    if not precision.reduced:
        return torch.autocast(dev.type, enabled=False)
    return torch.autocast(dev.type, dtype=precision.dtype)
