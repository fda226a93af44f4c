"""The pretraining loop on HF Accelerate: one CPU up to many GPUs and nodes.

``pretrain(config)`` builds the model and data, trains with AdamW + warmup/cosine, validates
(loss and image<->report Recall@K), logs to TensorBoard and ``metrics.jsonl``, and writes
resumable checkpoints and a final ``model/`` directory (``save_pretrained`` format).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from omegaconf import OmegaConf
from radalign.data.sections import flip_laterality
from radalign.encoders.atomic import atomic_write
from radalign.encoders.errors import SkipLog
from radalign.encoders.frozen_text import FrozenTextCache
from radalign.encoders.model import TextFeatures
from radalign.pretrain.config import TrainConfig, save_train_config
from radalign.pretrain.global_loss import clamp_logit_scale_
from radalign.pretrain.objective import Objective
from radalign.pretrain.pair_dataset import EpochShuffleSampler, PairCollator, PairDataset
from radalign.pretrain.train_state import (
    LoopState,
    find_checkpoint,
    load_loop_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from radalign.pretrain.validation import validate
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class NonFiniteLoss(FloatingPointError):
    """A NaN or infinite loss; training stops and the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    history: list[dict]
    skipped: SkipLog
    text_cache: FrozenTextCache | None = None
    """The frozen report tower's (or its frozen bottom's) features per training report
    (:func:`frozen_text_cache`)."""


def pretrain(config: TrainConfig, *, resume: bool | str | Path = False) -> TrainResult:
    """Train as ``config`` says; ``resume`` = ``True`` (newest checkpoint of the run) or a path."""
    run_dir = Path(config.output_dir)
    uses_local = config.loss.local_weight > 0 or config.loss.token_weight > 0
    from radalign.encoders.precision import resolve_precision

    # mixed_precision "auto": bf16 where the hardware runs it natively and fast, else fp32
    precision = resolve_precision(
        config.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu"
    )
    log.info("precision: %s", precision)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=[t for t in config.trackers if t] or None,
        project_dir=str(run_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=not uses_local)],
    )
    set_seed(config.seed)

    from radalign.pretrain.data import load_pairs

    with accelerator.main_process_first():
        pairs = load_pairs(config.data)
    train_records = pairs.split(config.data.train_split)
    val_records = pairs.split(config.data.val_split)
    if not train_records:
        raise ValueError(f"no training pairs in split {config.data.train_split!r} of {pairs.root}")

    model = _build_model(config)
    model.train()  # HF from_pretrained leaves the report tower in eval mode
    checkpoint = _resume_path(run_dir, resume)
    if checkpoint is not None:
        _check_same_model(model, checkpoint)
        from radalign.encoders.checkpoint import WEIGHTS_NAME, load_checked
        from safetensors.torch import load_file

        load_checked(model, load_file(str(checkpoint / "model" / WEIGHTS_NAME)), checkpoint)

    objective = Objective(config.loss).to(accelerator.device)
    optimizer = _optimizer(model, config, objective)
    scheduler = _scheduler(optimizer, config)
    dataset = PairDataset(
        train_records,
        model.transform(train=True, aug=_augment(config)),
        seed=config.seed,
        window=config.data.window,
    )
    sampler = EpochShuffleSampler(len(dataset), seed=config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=PairCollator(model.tokenizer),
        drop_last=True,
        # the loader's own generator: creating an iterator then never draws from the global RNG,
        # which dropout uses and a resumed run restores
        generator=torch.Generator().manual_seed(config.seed),
    )
    text_cache = frozen_text_cache(model.to(accelerator.device), config)
    if text_cache is not None:
        reports = [r for r in (str(r.report or "").strip() for r in train_records) if r]
        if config.loss.flip_negatives:
            reports += [flip_laterality(r) for r in reports]
        text_cache.warm(reports, accelerator.device)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = LoopState()
    if checkpoint is not None:
        opt_state, sched_state, rngs, state = load_loop_files(checkpoint)
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(sched_state)
        set_rng_state(rngs[accelerator.process_index])
        log.info("resumed from %s at step %d", checkpoint, state.step)

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(config, run_dir / "config.yaml")
        _write_run_info(accelerator, run_dir / "run.json", checkpoint, precision)
        pairs.skipped.write_csv(run_dir / "data-skipped.csv")
    if accelerator.log_with:
        accelerator.init_trackers("tb", config=_flat(config))

    history: list[dict] = []
    skipped = SkipLog()
    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ValueError(
            f"{len(train_records)} training pairs give no full batch of {config.batch_size} "
            f"per process; lower batch_size"
        )
    bar = tqdm(
        total=config.max_steps,
        initial=state.step,
        desc="pretrain",
        unit="step",
        disable=not accelerator.is_local_main_process,
    )
    window: dict[str, float] = {}
    tick = time.perf_counter()
    while state.step < config.max_steps:
        # a resumed run starts mid-epoch: skip the samples all processes already consumed
        seen = state.batches_in_epoch * config.batch_size * accelerator.num_processes
        sampler.use_epoch(state.epoch, start=seen)
        dataset.use_epoch(state.epoch)
        for batch in loader:
            state.batches_in_epoch += 1
            for s in batch["skipped"]:
                skipped.add(*s)
            if "pixels" not in batch:
                continue
            parts = train_step(
                accelerator,
                model,
                objective,
                optimizer,
                scheduler,
                batch,
                config,
                text_cache=text_cache,
                step=state.step + 1,
            )
            for key, value in parts.items():
                window[key] = window.get(key, 0.0) + float(value) / config.log_every
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            bar.update(1)
            if state.step % config.log_every == 0 or state.step == config.max_steps:
                secs = time.perf_counter() - tick
                row = {f"train/{k}": v for k, v in window.items()}
                row["lr"] = scheduler.get_last_lr()[0]
                row["logit_scale"] = float(
                    accelerator.unwrap_model(model).logit_scale.detach().exp()
                )
                row["steps_per_s"] = config.log_every / max(secs, 1e-9)
                _log(accelerator, run_dir, state.step, row, history)
                bar.set_postfix(loss=f"{row.get('train/loss', float('nan')):.3f}")
                window, tick = {}, time.perf_counter()
            if state.step % config.eval_every == 0 or state.step == config.max_steps:
                _validate(
                    accelerator,
                    model,
                    val_records,
                    config,
                    state.step,
                    run_dir,
                    history,
                    text_cache,
                )
            if state.step % config.save_every == 0 or state.step == config.max_steps:
                _save(accelerator, run_dir, model, optimizer, scheduler, state, config)
            if state.step >= config.max_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    bar.close()

    model_dir = run_dir / "model"
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(model_dir)
        skipped.write_csv(run_dir / "skipped.csv")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, model_dir, state.step, history, skipped, text_cache)


def train_step(
    accelerator,
    model,
    objective,
    optimizer,
    scheduler,
    batch: dict,
    config: TrainConfig,
    *,
    text_cache: FrozenTextCache | None = None,
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """One (micro-)batch: forward, loss, backward, and the optimizer step when gradients sync.

    Returns the detached loss components. Raises :class:`NonFiniteLoss` before any update."""
    core = accelerator.unwrap_model(model)
    reports, tokens, flipped = batch["reports"], batch["tokens"], None
    if config.loss.flip_negatives:  # the batch's reports with left/right swapped, after them
        flipped = [flip_laterality(r) for r in reports]
        reports = list(reports) + flipped
        if text_cache is None:
            tokens = {k: v.to(accelerator.device) for k, v in core.tokenize(reports).items()}
    with accelerator.accumulate(model):
        with accelerator.autocast():
            cached = text_cache(reports, accelerator.device) if text_cache else None
            img, txt = model(batch["pixels"], tokens, cached)
            negatives = None
            if flipped is not None:
                n = len(flipped)
                valid = [f != r for f, r in zip(flipped, batch["reports"], strict=True)]
                negatives = (txt.embedding[n:], torch.tensor(valid, device=txt.embedding.device))
                txt = TextFeatures(txt.embedding[:n], txt.words[:n], txt.word_mask[:n])
            total, parts = objective(img, txt, core.logit_scale, negatives)
        _stop_if_not_finite(accelerator, total, parts, step)
        accelerator.backward(total)
        _average_loss_grads(accelerator, objective)
        if accelerator.sync_gradients and config.optim.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale_(core.logit_scale)
    return parts


def frozen_text_cache(model, config: TrainConfig, rows=None) -> FrozenTextCache | None:
    """The cache of what the run's report tower computes without training: the whole tower's
    features with ``optim.freeze_text``, the hidden states below the top
    ``optim.text_trainable_layers`` with ``optim.cache_text_bottom``; None when nothing is frozen.
    ``rows``: an earlier cache's rows of the same run (e.g. training's, for a reloaded model)."""
    opt = config.optim
    if opt.freeze_text:
        return FrozenTextCache(model, rows=rows)
    if not opt.cache_text_bottom or opt.text_trainable_layers is None:
        return None
    tower = model.text_tower
    if not hasattr(tower, "encode_bottom"):
        raise ValueError(
            f"optim.cache_text_bottom needs a Hugging Face report tower, not "
            f"{type(tower).__name__}; set it to false"
        )
    top = min(opt.text_trainable_layers, len(tower.blocks()))
    return FrozenTextCache(model, rows=rows, top_layers=top) if top > 0 else None


def _build_model(config: TrainConfig):
    from radalign.encoders.loading import load

    model = load(config.model, pretrained=not config.random_init)
    # only the towers' protocol (radalign.encoders.tower.Tower): any backend, timm/HF/open_clip
    if config.gradient_checkpointing:
        model.image_tower.set_grad_checkpointing(True)
        model.text_tower.set_grad_checkpointing(True)
    text_layers = 0 if config.optim.freeze_text else config.optim.text_trainable_layers
    if text_layers is not None:
        model.text_tower.train_top_layers(text_layers)
    return model


def _optimizer(model, config: TrainConfig, objective=None) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms, biases and the temperature; own lr for the text tower.

    Parameters of the loss itself (SigLIP's bias) train with the model's learning rate."""
    opt = config.optim
    groups: dict[tuple[bool, bool], list] = {}
    named = list(model.named_parameters())
    if objective is not None:
        named += [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    for name, p in named:
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or name.endswith(".bias") or "logit_scale" in name
        is_text = name.startswith("text_tower.")
        groups.setdefault((is_text, no_decay), []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": (opt.text_lr if is_text and opt.text_lr is not None else opt.lr),
            "weight_decay": 0.0 if no_decay else opt.weight_decay,
        }
        for (is_text, no_decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, betas=tuple(opt.betas), eps=opt.eps)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Linear warmup then cosine decay to ``optim.min_lr_ratio`` (a ``LambdaLR``).

    transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` gives the factor, with its
    warmup counted one step earlier: the factor at step ``s < warmup_steps`` is
    ``(s + 1) / warmup_steps`` (transformers: ``s / warmup_steps``, so the first step would not
    train), and from ``warmup_steps`` on transformers' cosine unchanged.  These are the values of
    earlier radalign versions, so their checkpoints resume on the same schedule.  The state
    (``scheduler.state_dict()``) is the step count; the factor is a plain function and is not
    saved.
    """
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    warmup = config.optim.warmup_steps
    library = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup, config.max_steps, min_lr_rate=config.optim.min_lr_ratio
    ).lr_lambdas[0]  # this throwaway scheduler leaves each group's initial_lr at its lr

    def factor(step: int) -> float:
        return library(step + 1 if step < warmup else step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _augment(config: TrainConfig):
    from radalign.encoders.transforms import AugmentConfig

    a = config.augment
    return AugmentConfig(
        scale=tuple(a.scale),
        rotate_deg=a.rotate_deg,
        translate=a.translate,
        brightness=a.brightness,
        contrast=a.contrast,
        hflip=a.hflip,
    )


def _average_loss_grads(accelerator, objective) -> None:
    """Average the gradients of the loss's own parameters over processes, as DDP does for the
    model's (the loss is not wrapped by DDP)."""
    if accelerator.num_processes == 1:
        return
    for p in objective.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= accelerator.num_processes


def _stop_if_not_finite(accelerator, total, parts, step: int) -> None:
    bad = torch.tensor(0.0 if torch.isfinite(total.detach()) else 1.0, device=total.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        values = {k: float(v) for k, v in parts.items()}
        raise NonFiniteLoss(
            f"non-finite loss at step {step} ({values}); stopped before the update. The last "
            "good checkpoint is untouched: lower the learning rate or use bf16 instead of fp16, "
            "then --resume."
        )


def _write_run_info(accelerator, path: Path, resumed_from: Path | None, precision=None) -> None:
    """Where and how this run (or resumed part) ran, for reproducing it; ``precision`` (the
    resolved :class:`~radalign.encoders.precision.Precision`) adds what was requested, what was
    used and why."""
    import platform

    from radalign._version import __version__

    info = {
        "radalign": __version__,
        "torch": torch.__version__,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor(),
        "mixed_precision": accelerator.mixed_precision,
        "precision": precision.as_dict() if precision is not None else None,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_write(path, mode="w", encoding="utf-8") as fh:
        fh.write(json.dumps(info, indent=2) + "\n")


def _log(accelerator, run_dir: Path, step: int, row: dict, history: list[dict]) -> None:
    row = {"step": step, **row}
    history.append(row)
    accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
    if accelerator.is_main_process:
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _validate(accelerator, model, records, config, step, run_dir, history, text_cache) -> None:
    if records and accelerator.is_main_process:
        with torch.random.fork_rng(devices=[]):  # validating must not change training's RNG
            metrics = validate(accelerator.unwrap_model(model), records, config, text_cache)
        _log(accelerator, run_dir, step, {f"val/{k}": v for k, v in metrics.items()}, history)
    accelerator.wait_for_everyone()


def _save(accelerator, run_dir, model, optimizer, scheduler, state, config) -> None:
    rngs = gather_object([rng_state()])
    if accelerator.is_main_process:
        save_checkpoint(
            run_dir,
            accelerator.unwrap_model(model),
            optimizer,
            scheduler,
            rngs,
            state,
            config.keep_checkpoints,
        )
    accelerator.wait_for_everyone()


def _resume_path(run_dir: Path, resume) -> Path | None:
    if not resume:
        return None
    path = find_checkpoint(run_dir) if resume is True else Path(resume)
    if path is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {run_dir}/checkpoints")
    if (path / "checkpoints").is_dir():
        path = find_checkpoint(path)
    if path is None or not (path / "state.json").is_file():
        raise FileNotFoundError(f"--resume: {path} is not a complete checkpoint")
    return path


def _check_same_model(model, checkpoint: Path) -> None:
    """Refuse to resume when the model config changed, showing what differs."""
    from radalign.encoders.checkpoint import read_saved_config
    from radalign.encoders.config import to_dict

    saved, now = to_dict(read_saved_config(checkpoint / "model")), to_dict(model.config)
    diff = _diff(saved, now)
    if diff:
        raise ValueError(
            f"cannot resume from {checkpoint}: the model config changed:\n  " + "\n  ".join(diff)
        )


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: checkpoint {va!r} -> now {vb!r}")
    return out


def _flat(config: TrainConfig) -> dict:
    flat = OmegaConf.to_container(OmegaConf.structured(config))
    out: dict = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v if isinstance(v, int | float | str | bool) else str(v)

    walk(flat)
    return out
