"""Images per second per CPU core through the training transform: raw DICOM, raw JPEG, shards.

Full-size-like inputs are written first (``--n`` files of ``--height`` x ``--width``, default
3000 x 2500: 12-bit data in 16-bit DICOM, uncompressed and in every lossless transfer syntax
pydicom can *encode* here (RLE Lossless natively; JPEG 2000 Lossless with
pylibjpeg-openjpeg), and an 8-bit JPEG at quality 95), then prepared with
:func:`radalign.data.prepare.prepare` into 512-px shards (uint8 and uint16). JPEG Lossless
(process 14, MIMIC-CXR's own syntax) is decoded by pylibjpeg-libjpeg but pydicom has no encoder
for it, so it is listed as not measured.

Each variant is timed in this one process with one thread (cv2, torch, OpenMP): decode with
:func:`radalign.encoders.imageio.load_image`, then the training :class:`ImageTransform` of the
demo model (its ``image_size``, augmentation on). Baselines in the same run: uncompressed DICOM
(the ratio target: shards >= 10x per core) and the demo model's own training step
(:func:`radalign.pretrain.trainer.train_step`, global + local loss, fp32, all cores) in
images/s, so ``loader cores needed = model images/s / loader images/s per core``.

    python benchmarks/loader_speed.py                 # 4 files of 3000x2500, demo model
    python benchmarks/loader_speed.py --n 8 --reps 3

Appends one JSON line to ``benchmarks/results/loader_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import append_run  # noqa: E402  (benchmarks/results_io.py, beside this script)


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A 12-bit chest-film-like image: smooth anatomy-scale structure plus quantum noise."""
    import cv2

    coarse = rng.normal(size=(h // 50 + 2, w // 50 + 2)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lungs = np.exp(-(((xx - w * 0.3) / (w * 0.15)) ** 2 + ((yy - h * 0.5) / (h * 0.3)) ** 2))
    lungs += np.exp(-(((xx - w * 0.7) / (w * 0.15)) ** 2 + ((yy - h * 0.5) / (h * 0.3)) ** 2))
    img = 0.55 - 0.3 * lungs + 0.05 * smooth + rng.normal(0, 0.01, (h, w)).astype(np.float32)
    return np.clip(img * 4095, 0, 4095).astype(np.uint16)


def _dicom(path: Path, pixels: np.ndarray, syntax=None) -> bool:
    """Write a MONOCHROME2 CR image; ``syntax`` a lossless transfer syntax to compress into.
    ``False`` if no encoder for it is installed."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        try:
            ds.compress(syntax, pixels)
        except (RuntimeError, NotImplementedError, ValueError):
            return False
    ds.save_as(path, enforce_file_format=True)
    return True


def _rate(fn: Callable[[Path], object], paths: list[Path], reps: int) -> float:
    """Median images/s over ``reps`` passes of ``fn`` over ``paths`` (one warm-up item)."""
    fn(paths[0])
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _model_rate(model_name: str, batch: int, steps: int, threads: int) -> tuple[float, int]:
    """Training images/s of ``model_name`` (fp32, global + local loss) and its image size."""
    import torch
    from accelerate import Accelerator
    from radalign.pretrain.config import TrainConfig
    from radalign.pretrain.objective import Objective
    from radalign.pretrain.trainer import _optimizer, train_step

    import radalign

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = radalign.load(model_name, pretrained=False)
    size = model.config.image.image_size
    reports = [f"Small left pleural effusion, case {i}. No pneumothorax." for i in range(batch)]
    acc = Accelerator(cpu=True)
    config = TrainConfig(model=model_name)
    batch_ = {"pixels": torch.randn(batch, 3, size, size), "tokens": model.tokenize(reports)}
    batch_["reports"] = reports
    model.train()
    objective = Objective(config.loss)
    optimizer = _optimizer(model, config, objective)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)

    def step() -> None:
        train_step(acc, model, objective, optimizer, scheduler, batch_, config)

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(1)
    return batch / statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="files per variant")
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--width", type=int, default=2500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=512, help="prepared longer side")
    ap.add_argument("--model", default="demo-resnet18-minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="model's threads")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import cv2
    import torch
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless, RLELossless
    from radalign.data.prepare import prepare
    from radalign.data.sources import open_source
    from radalign.encoders.imageio import load_image
    from radalign.encoders.transforms import ImageTransform

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    model_ips, image_size = _model_rate(args.model, args.batch, args.steps, args.threads)
    transform = ImageTransform(image_size, train=True, mean=[0.5] * 3, std=[0.25] * 3, seed=0)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="loader_speed_"))
    images = [_image(rng, args.height, args.width) for _ in range(args.n)]
    variants: dict[str, list[Path]] = {}
    not_measured: dict[str, str] = {
        "DICOM JPEG Lossless (process 14)": "pydicom has no encoder for it (decoding is there)"
    }
    for name, syntax in (
        ("DICOM uncompressed", None),
        ("DICOM RLE Lossless", RLELossless),
        ("DICOM JPEG 2000 Lossless", JPEG2000Lossless),
    ):
        folder = work / name.replace(" ", "_")
        folder.mkdir()
        paths = [folder / f"{i}.dcm" for i in range(args.n)]
        if all(_dicom(p, img, syntax) for p, img in zip(paths, images)):
            try:
                load_image(paths[0])
                variants[name] = paths
            except Exception as exc:  # noqa: BLE001 - an unusable decoder is reported
                not_measured[name] = f"no decoder: {exc}"
        else:
            not_measured[name] = "no encoder installed"
    jpgs = [work / f"{i}.jpg" for i in range(args.n)]
    for p, img in zip(jpgs, images):
        Image.fromarray((img >> 4).astype(np.uint8)).save(p, quality=95)
    variants["JPEG 8-bit q95"] = jpgs
    manifest = work / "manifest.csv"
    lines = ["image_path,report"] + [
        f"{p},FINDINGS: Clear." for p in variants["DICOM uncompressed"]
    ]
    manifest.write_text("\n".join(lines) + "\n")
    prep_seconds = {}
    for dtype in ("uint8", "uint16"):
        t0 = time.perf_counter()
        prepare(manifest, work / dtype, size=args.size, dtype=dtype, workers=1, progress=False)
        prep_seconds[dtype] = time.perf_counter() - t0
        paths = [r.image_path for r in open_source(work / dtype)]
        variants[f"shards {args.size}px {dtype}"] = paths

    def pipeline(path: Path) -> object:
        return transform(load_image(path))

    rates = {name: _rate(pipeline, paths, args.reps) for name, paths in variants.items()}
    base = rates["DICOM uncompressed"]
    print(
        f"{args.n} images of {args.height}x{args.width}; training transform at {image_size} px; "
        f"one core each; model {args.model} batch {args.batch} on {args.threads} threads: "
        f"{model_ips:.1f} images/s"
    )
    print(f"{'variant':32s} {'img/s/core':>10s} {'vs raw DICOM':>12s} {'cores to feed model':>20s}")
    for name, r in rates.items():
        print(f"{name:32s} {r:10.1f} {r / base:11.1f}x {model_ips / r:20.2f}")
    for name, why in not_measured.items():
        print(f"{name:32s} {'-':>10s}  not measured: {why}")
    for dtype, s in prep_seconds.items():
        print(f"prepare {dtype}: {args.n / s:.1f} images/s on one core (decode+resize+PNG+tar)")
    cores = os.cpu_count() or 1
    best = rates[f"shards {args.size}px uint8"]
    print(
        f"loader on all {cores} cores from uint8 shards vs model step: "
        f"{best * cores / model_ips:.1f}x (>1: the loader is not the bottleneck); "
        f"raw DICOM: {base * cores / model_ips:.2f}x"
    )
    row = {
        "n": args.n,
        "shape": [args.height, args.width],
        "size": args.size,
        "image_size": image_size,
        "model": args.model,
        "model_images_per_s": model_ips,
        "model_threads": args.threads,
        "images_per_s_per_core": rates,
        "ratio_to_raw_dicom": {k: v / base for k, v in rates.items()},
        "not_measured": not_measured,
        "prepare_images_per_s": {k: args.n / v for k, v in prep_seconds.items()},
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
    }
    append_run("loader_speed", row, Path(args.out))
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
