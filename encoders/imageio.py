"""Decoding: one function turns a DICOM, PNG or JPEG path into a float32 image in [0, 1].

DICOM: modality LUT / rescale, then the intensity window (``header`` VOI LUT or window,
``full`` range, or ``percentile`` clip), scaled to [0, 1], then MONOCHROME1 inverted so that
dense tissue is always bright. PNG/JPEG: 8- and 16-bit kept at full precision; colour becomes
gray. Every failure raises :class:`~radalign.encoders.errors.InputError` with the path and a
short reason, so batch jobs can skip and count.

Prepared shards (``radalign data prepare``): a path ``DIR/shard-000003.tar::000123.png`` names
one PNG member of a tar shard. It is read at the byte offset recorded in ``DIR/index.parquet``
(loaded once per process) and decoded exactly like a PNG file, so every reader of scans
accepts prepared shards transparently.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from radalign.encoders.errors import InputError

IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".png", ".jpg", ".jpeg"})
SAFE_DICOM_FIELDS = (
    "Modality",
    "ViewPosition",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "BodyPartExamined",
    "SOPClassUID",
    "PatientOrientation",
    "ProcedureCodeSequence",
)
WINDOWS = ("header", "full", "percentile")
SHARD_SEP = "::"
SHARD_INDEX = "index.parquet"


def load_image(
    path: str | os.PathLike,
    *,
    window: str = "header",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """A 2-D float32 array in [0, 1]; ``InputError`` for anything that is not a usable image."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, not {window!r}")
    member = split_shard_member(path)
    if member is not None:
        return _load_raster(_read_shard_member(*member), window, percentiles, where=path)
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "zero-byte file")
    if _is_dicom(path):
        return _load_dicom(path, window, percentiles)
    return _load_raster(path, window, percentiles)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM"


def _load_dicom(path: Path, window: str, percentiles) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as exc:
        raise InputError(path, "truncated or corrupt image", _first_line(exc)) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputError(path, "no pixel data")
    try:
        raw = ds.pixel_array
    except NotImplementedError as exc:
        raise InputError(path, "unsupported transfer syntax", _first_line(exc)) from None
    except RuntimeError as exc:
        msg = _first_line(exc)
        reason = (
            "unsupported transfer syntax"
            if "plugin" in msg or "decod" in msg.lower()
            else ("truncated or corrupt image")
        )
        raise InputError(path, reason, msg) from None
    except (ValueError, AttributeError, KeyError, EOFError, OSError) as exc:
        raise InputError(path, "truncated or corrupt image", _first_line(exc)) from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and raw.ndim >= 3:
        raw = raw[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3:  # colour
        return _to_unit(_rgb_to_gray(raw.astype(np.float64)), window, percentiles, None)
    values = apply_modality_lut(raw, ds).astype(np.float64)
    if window == "header" and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        # an unusable VOI header falls back to the full range
        with contextlib.suppress(ValueError, TypeError, IndexError):
            values = apply_voi_lut(values, ds, index=0).astype(np.float64)
        img = _minmax(values)
    else:
        img = _to_unit(values, "full" if window == "header" else window, percentiles, None)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _load_raster(
    src: Path | io.BytesIO, window: str, percentiles, where: str | os.PathLike | None = None
) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = src if where is None else where  # errors name the file (or shard member)
    try:
        with Image.open(src) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                full = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
            elif mode in ("L", "1"):
                arr, full = np.asarray(im.convert("L"), dtype=np.float64), 255.0
            elif mode == "F":
                arr, full = np.asarray(im, dtype=np.float64), None
            else:  # RGB, RGBA, P, LA, CMYK ...
                arr, full = np.asarray(im.convert("L"), dtype=np.float64), 255.0
    except UnidentifiedImageError:
        raise InputError(path, "not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, "truncated or corrupt image", _first_line(exc)) from None
    return _to_unit(arr, window, percentiles, full).astype(np.float32)


def shard_member_path(shard: str | os.PathLike, member: str) -> Path:
    """The path that names ``member`` of the tar ``shard`` (``DIR/shard-000003.tar::k.png``)."""
    return Path(f"{os.fspath(shard)}{SHARD_SEP}{member}")


def split_shard_member(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(tar path, member name)`` of a shard-member path; ``None`` for any other path."""
    text = os.fspath(path)
    if SHARD_SEP not in text:
        return None
    shard, _, member = text.rpartition(SHARD_SEP)
    if not shard.endswith(".tar") or not member or "/" in member:
        return None
    return Path(shard), member


_SHARD_LOCK = threading.Lock()
_SHARD_TABLES: dict[str, tuple[tuple[int, int], dict[tuple[str, str], tuple[int, int]]]] = {}


def _shard_table(folder: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(shard file name, member): (byte offset, size)}`` of a prepared folder, cached per
    process and reloaded when ``index.parquet`` changes."""
    index = folder / SHARD_INDEX
    try:
        st = index.stat()
    except OSError:
        raise InputError(index, "missing shard index", "not a prepared folder") from None
    stamp = (st.st_mtime_ns, st.st_size)
    key = str(folder.resolve())
    with _SHARD_LOCK:
        hit = _SHARD_TABLES.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(index, columns=["shard", "member", "offset", "size"]).to_pydict()
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(index, "unreadable shard index", _first_line(exc)) from None
    table = {
        (s, m): (int(o), int(n))
        for s, m, o, n in zip(t["shard"], t["member"], t["offset"], t["size"])
    }
    with _SHARD_LOCK:
        _SHARD_TABLES[key] = (stamp, table)
    return table


def _read_shard_member(shard: Path, member: str) -> io.BytesIO:
    """The bytes of ``member`` of ``shard``, read at its recorded offset."""
    where = shard_member_path(shard, member)
    entry = _shard_table(shard.parent).get((shard.name, member))
    if entry is None:
        raise InputError(where, "missing shard member", f"not in {shard.parent / SHARD_INDEX}")
    offset, size = entry
    try:
        with open(shard, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    except FileNotFoundError:
        raise InputError(where, "missing shard", f"{shard} not found") from None
    except OSError as exc:
        raise InputError(where, "unreadable shard", _first_line(exc)) from None
    if len(data) != size:
        raise InputError(where, "truncated or corrupt image", f"{len(data)} of {size} bytes")
    return io.BytesIO(data)


def _to_unit(arr: np.ndarray, window: str, percentiles, full: float | None) -> np.ndarray:
    if window == "percentile":
        lo, hi = np.percentile(arr, percentiles)
        return _clip_scale(arr, lo, hi)
    if full is not None:
        return np.clip(arr / full, 0.0, 1.0)
    return _minmax(arr)


def _minmax(arr: np.ndarray) -> np.ndarray:
    return _clip_scale(arr, float(arr.min()), float(arr.max()))


def _clip_scale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, np.float64)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def _rgb_to_gray(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def read_dicom_fields(
    path: str | os.PathLike, fields: Sequence[str] = SAFE_DICOM_FIELDS
) -> dict[str, str | float | None]:
    """Header values without reading pixels. The defaults identify no patient."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(fields))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds
        raise InputError(path, "truncated or corrupt image", _first_line(exc)) from None
    out: dict[str, str | float | None] = {}
    for name in fields:
        value = ds.get(name)
        if value is None:
            out[name] = None
        elif isinstance(value, int | float):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image files of a folder (recursive, sorted), of a list file (one path a line), or one file."""
    source = Path(source)
    if source.is_dir():
        return sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    if not source.exists():
        raise InputError(source, "file not found")
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return [source]
    paths = []
    for line in source.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            paths.append(p if p.is_absolute() else source.parent / p)
    return paths
