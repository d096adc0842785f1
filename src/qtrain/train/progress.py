"""What a run shows while it trains, and the rounding of numbers meant for people.

A progress bar (tqdm, on stderr) only when ``progress`` is on and stderr is a terminal; otherwise
one plain line per finished epoch on stdout (epoch, train loss and error, test or validation
loss and error, lr, seconds), so logs of batch jobs stay readable. Files keep full precision
(``metrics.jsonl``, ``summary.json`` and ``checkpoint.pt`` are records that resumes and
comparisons read bit for bit); :func:`rounded` rounds what is printed: errors (%) to 4
decimals, losses to 5 significant digits, seconds to 0.1 s, rates to whole numbers.
"""
from __future__ import annotations

import math
import sys
from typing import Any

_DECIMALS = {"error": 4, "seconds": 1, "images_per_s": 0, "bytes": 0}


def bar_wanted(progress: bool, stream=None) -> bool:
    """Draw tqdm bars only for a person watching a terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(progress) and hasattr(stream, "isatty") and stream.isatty()


def _round(key: str, v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _round(k if key != "weight_change" else "percent", x) for k, x in v.items()}
    if isinstance(v, list):
        return [_round(key, x) for x in v]
    if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v):
        return v
    if key == "percent" or key.endswith("error") or key.startswith("weight_change"):
        return round(v, _DECIMALS["error"])
    for suffix, places in _DECIMALS.items():
        if key.endswith(suffix):
            return round(v, places) if places else round(v)
    return float(f"{v:.5g}")  # losses, lr and other measured values: 5 significant digits


def rounded(record: dict) -> dict:
    """``record`` with its floats rounded to what they mean (see the module docstring)."""
    return {k: _round(k, v) for k, v in record.items()}


_METHODS = {"float": "float (no quantization; --method bc|r|sr quantizes)", "bc": "bc (BinaryConnect)",
            "r": "r (deterministic rounding)", "sr": "sr (stochastic rounding)"}


def start_line(cfg, n_train: int, out_dir, start_epoch: int = 0, resume: bool = False, step: int = 0,
               n_batches: int = 0) -> str:
    """One line before the first epoch: what trains, on what, with how many threads, where to; on
    resume, where it continues (``resuming at epoch 1, batch 17/390``), or that nothing is left."""
    threads = "torch's default" if cfg.threads is None else cfg.threads
    if resume and start_epoch >= cfg.epochs:
        return f"already finished: {start_epoch} of {_epochs(cfg.epochs)} trained in {out_dir}; {extend_hint(cfg)}"
    where = "training" if not resume else f"resuming at epoch {start_epoch + 1}" + \
        (f", batch {step}/{n_batches}" if step else "")
    return (f"{where}: method {_METHODS.get(cfg.method, cfg.method)} with {cfg.optimizer}, {cfg.model} on {cfg.data} "
            f"({n_train:,} training examples), {_epochs(cfg.epochs)} of batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"threads {threads} -> {out_dir}")


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def extend_hint(cfg) -> str:
    """How a finished run trains further under the resume rules (the lr schedule stays as it was)."""
    if cfg.lr_schedule == "cosine":
        return "its cosine lr has reached 0 and cannot be extended; start a new run for more epochs"
    keep = "" if cfg.lr_milestones is not None else \
        f" --lr-milestones {' '.join(map(str, cfg.milestones()))}"  # the default ones scale with --epochs
    return f"to train it further: qtrain train --resume RUN --epochs N{keep} (N > {cfg.epochs})"


def epoch_line(row: dict, epochs: int, held_out: str = "test") -> str:
    """One line for a finished epoch, e.g. ``epoch 3/10  train loss 0.5123 error 17.31%  test loss
    0.4871 error 16.02%  lr 0.01  4.2 s``."""
    def pct(v):
        return "–" if v is None else f"{v:.2f}%"

    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} error {pct(row['train_error'])}  "
            f"{held_out} loss {row['test_loss']:.4f} error {pct(row['test_error'])}  lr {row['lr']:g}  "
            f"{row['seconds']:.1f} s")
