"""Resuming a run: the checkpoint is checked against the run's settings, then loaded into the
run's model, optimizer, lr schedule and weight-change tracker (FSDP runs: from the sharded folder).

A resumed run must share with its checkpoint every setting that changes the numbers
(:data:`FIXED_ON_RESUME`); others, like ``epochs`` (for a step schedule) or ``progress``, may change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch

from . import sharding
from .checkpoint import load_checkpoint
from .config import TrainConfig, recorded

# settings a resumed run must share with its checkpoint (others, like epochs or progress, may change)
FIXED_ON_RESUME = ("data", "model", "method", "optimizer", "batch_size", "lr", "lr_gamma", "momentum",
                   "weight_decay", "micro_batch", "grid", "scale", "delta", "bits", "quantize", "bc_rounding", "width", "seed",
                   "train_subset", "val_size", "latent_init", "lr_scale", "threads",
                   "lr_schedule", "warmup_steps", "block_size", "steps_per_epoch", "weight_dtype", "state_dtype",
                   "channels_last")


def restore(path: Path, cfg: TrainConfig, model, opt, sched, tracker, n_train: int) -> Tuple[int, int, dict, list]:
    """Load ``path`` into the run's objects; returns (finished epochs, batches done in the next
    epoch, that epoch's running sums, the finished epochs' metrics rows)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no checkpoint yet (the run stopped before its first save); "
                                f"start it again: qtrain train --config {path.parent / 'config.json'} --out {path.parent}")
    ck = load_checkpoint(path)
    saved = ck["config"]
    for key in FIXED_ON_RESUME:
        was = recorded(saved, key)
        if was != getattr(cfg, key):
            raise ValueError(f"checkpoint {path} was made with {key}={was!r}, this run has "
                             f"{getattr(cfg, key)!r}; resume with the run's own settings")
    if cfg.lr_schedule == "cosine" and saved.get("epochs") != cfg.epochs:
        raise ValueError(f"checkpoint {path} follows a cosine lr over {saved.get('epochs')} epoch(s), this run over "
                         f"{cfg.epochs}; resume with --epochs {saved.get('epochs')}")
    saved_milestones = TrainConfig(**{k: v for k, v in saved.items() if k in ("epochs", "lr_milestones")}).milestones()
    if saved_milestones != cfg.milestones():
        raise ValueError(f"checkpoint {path} decays the lr at epochs {saved_milestones}, this run at {cfg.milestones()}; "
                         f"to train longer keep the schedule: --lr-milestones {' '.join(map(str, saved_milestones))}")
    if bool(saved.get("fsdp", False)) != cfg.fsdp:
        raise ValueError(f"checkpoint {path} was saved {'with' if saved.get('fsdp') else 'without'} --fsdp; resume it "
                         f"{'with' if saved.get('fsdp') else 'without'} --fsdp")
    epoch, step, partial, history = ck["epoch"], ck["step"], ck["partial"], ck["history"]
    if epoch > cfg.epochs or (step and (epoch >= cfg.epochs or step > n_train)):  # step == n_train: stopped after
        # the epoch's last batch, before its end-of-epoch work (the resumed epoch trains no batch)
        raise ValueError(f"checkpoint {path} is at epoch {epoch}, batch {step}, past epochs={cfg.epochs} "
                         f"({n_train} batches each); pass --epochs {max(epoch + bool(step), 1)} or more")
    if len(history) != epoch or (step and not isinstance(partial.get("loss_sum"), torch.Tensor)):
        raise ValueError(f"corrupt checkpoint {path}: {len(history)} metrics rows for epoch {epoch}; "
                         "delete it to start over, or restore a good copy")
    if cfg.fsdp:  # model, optimizer and tracker from the sharded folder, on any number of ranks
        sharding.load(path.parent, ck["optimizer"].get("sharded"), model, opt, tracker)
        sched.load_state_dict(ck["scheduler"])
        return ck["epoch"], ck["step"], ck["partial"], ck["history"]
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"checkpoint {path} does not fit model {cfg.model!r} ({str(e).splitlines()[0][:100]})") from None
    try:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        tracker.load_state_dict(ck["tracker"])
    except (RuntimeError, KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        raise ValueError(f"checkpoint {path} does not fit this run ({(str(e).splitlines() or [type(e).__name__])[0][:120]}); "
                         "delete it to start over, or restore a good copy") from None
    return epoch, step, partial, history
