"""Where each output of a run lies, and typed readers for them (``radalign demo`` writes a run
folder, ``radalign report`` reads one).

A run folder is the output of ``radalign pretrain`` (``run.json``, ``config.yaml``,
``metrics.jsonl``, ``model/``, ``checkpoints/``, ``skipped.csv``) or of ``radalign demo``: the
same under ``pretrain/`` plus ``demo.json``, the phantoms, the report index and each stage's
tables. :meth:`RunFolder.open` checks that a folder is one; :meth:`RunFolder.demo` names the
places of a demo run that is still being written.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radalign.encoders.errors import InputError

__all__ = ["RunFolder", "RunInfo"]

RUN_INFO = "run.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
DEMO_SUMMARY = "demo.json"
PRETRAIN = "pretrain"
PHANTOMS, PHANTOMS_TEST = "phantoms", "phantoms-test"
#: What makes a folder (or its ``pretrain/``) a run: at least one of these.
RUN_MARKERS = (RUN_INFO, CONFIG, METRICS, DEMO_SUMMARY)


@dataclass(frozen=True)
class RunInfo:
    """``run.json`` of a training run: what ran, on what, at which precision and why."""

    radalign: str
    torch: str
    num_processes: int
    device: str
    device_name: str
    precision_requested: str
    precision_used: str
    precision_reason: str
    resumed_from: str | None
    started: str

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        """Parse ``path``; :class:`InputError` when it is not a run.json object."""
        raw = _read_json(path)
        if not isinstance(raw, dict):
            raise InputError(path, "invalid run.json", "expected a JSON object")
        precision = raw.get("precision") if isinstance(raw.get("precision"), dict) else {}
        resumed = raw.get("resumed_from")
        try:
            return cls(
                radalign=str(raw.get("radalign", "")),
                torch=str(raw.get("torch", "")),
                num_processes=int(raw.get("num_processes", 1)),
                device=str(raw.get("device", "")),
                device_name=str(raw.get("device_name", "")),
                precision_requested=str(precision.get("requested", "")),
                precision_used=str(precision.get("used", raw.get("mixed_precision", ""))),
                precision_reason=str(precision.get("reason", "")),
                resumed_from=None if resumed is None else str(resumed),
                started=str(raw.get("started", "")),
            )
        except (TypeError, ValueError) as exc:
            raise InputError(path, "invalid run.json", str(exc)) from exc


@dataclass(frozen=True)
class RunFolder:
    """A run folder: ``root``, and ``train_dir`` where its training run's files lie (``root``
    itself for a pretrain run, ``root/pretrain`` for a demo run)."""

    root: Path
    train_dir: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunFolder:
        """The run folder at ``path``; :class:`FileNotFoundError` when there is no folder, or
        when neither it nor its ``pretrain/`` holds any of ``run.json``, ``config.yaml``,
        ``metrics.jsonl`` or ``demo.json``."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such run folder")
        train_dir = root / PRETRAIN if (root / PRETRAIN).is_dir() else root
        if not any((d / name).is_file() for d in {root, train_dir} for name in RUN_MARKERS):
            raise FileNotFoundError(
                f"{root}: not a run folder (no {', '.join(RUN_MARKERS)} in it or in its "
                f"{PRETRAIN}/; give the --out of `radalign demo` or the output_dir of "
                "`radalign pretrain`)"
            )
        return cls(root, train_dir)

    @classmethod
    def demo(cls, path: str | os.PathLike) -> RunFolder:
        """The places of the demo run folder ``path``, which need not exist yet."""
        root = Path(path)
        return cls(root, root / PRETRAIN)

    # ------------------------------------------------------------------------ places
    @property
    def model_dir(self) -> Path:
        return self.train_dir / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.train_dir / "checkpoints"

    @property
    def config_path(self) -> Path:
        return self.train_dir / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.train_dir / METRICS

    @property
    def summary_path(self) -> Path:
        return self.root / DEMO_SUMMARY

    @property
    def phantoms_dir(self) -> Path:
        """The demo's training phantoms."""
        return self.root / PHANTOMS

    @property
    def phantoms_test_dir(self) -> Path:
        """The demo's fresh test phantoms (another seed)."""
        return self.root / PHANTOMS_TEST

    @property
    def index_dir(self) -> Path:
        return self.root / "report-index"

    @property
    def zeroshot_preds(self) -> Path:
        return self.root / "zeroshot-preds.csv"

    @property
    def zeroshot_eval(self) -> Path:
        return self.root / "zeroshot-eval.csv"

    @property
    def retrieval_json(self) -> Path:
        return self.root / "retrieval.json"

    @property
    def flags_csv(self) -> Path:
        return self.root / "flags.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # ------------------------------------------------------------------------ contents
    def info(self) -> RunInfo | None:
        """``run.json`` of the training run; ``None`` when absent."""
        path = self.train_dir / RUN_INFO
        return RunInfo.read(path) if path.is_file() else None

    def config_text(self) -> str | None:
        """The resolved ``config.yaml`` as text; ``None`` when absent."""
        return _read_text(self.config_path)

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (lines that are not a JSON object, such as a killed
        run's last partial line, are passed over); empty when absent."""
        rows = []
        for line in (_read_text(self.metrics_path) or "").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def summary(self) -> dict[str, Any] | None:
        """``demo.json`` (each stage's numbers and seconds); ``None`` when absent (a pretrain
        run). :class:`InputError` when it is not a JSON object."""
        if not self.summary_path.is_file():
            return None
        summary = _read_json(self.summary_path)
        if not isinstance(summary, dict):
            raise InputError(self.summary_path, "invalid demo.json", "expected a JSON object")
        return summary

    def gallery(self) -> list[dict[str, Any]] | None:
        """The retrieval gallery (``retrieval.json``: one dict per test scan); ``None`` when
        absent or not a JSON list of objects."""
        if not self.retrieval_json.is_file():
            return None
        try:
            gallery = _read_json(self.retrieval_json)
        except InputError:
            return None
        if not isinstance(gallery, list):
            return None
        return [item for item in gallery if isinstance(item, dict)]

    @staticmethod
    def table(path: Path) -> list[dict[str, str]] | None:
        """The rows of the CSV ``path`` as strings; ``None`` when absent or unreadable."""
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError):
            return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    if text is None:
        raise InputError(path, "unreadable file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid {path.name}", str(exc)) from exc
