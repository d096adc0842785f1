r"""What a language-model run does differently from an image run; the loop calls these.

* **Data**: ``--data shakespeare`` is character-level text
  (:mod:`qtrain.data.shakespeare`); a training "epoch" is ``steps_per_epoch`` batches of
  ``batch_size`` random windows of ``block_size`` characters, a pure function of
  ``(seed, epoch, batch)``, so resuming mid-epoch replays exactly the skipped batches.
  ``test_subset`` limits validation to its first N windows.
* **Model**: ``--model gpt-tiny`` (:class:`qtrain.models.GPT`), stored in ``weight_dtype``
  (``bfloat16``: every weight, embeddings and norms included, is a bfloat16 tensor; with
  method ``float`` and ``adamw`` that is plain bf16 AdamW training).
* **Metric**: ``val_loss``, the mean cross-entropy over every character of the validation
  windows, in nats per character (:math:`\log_2 e` times that is bits per character).
* **Memory**: :func:`training_bytes` measures what training holds per parameter.

>>> import pathlib, tempfile
>>> from qtrain.train import TrainConfig
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "input.txt").write_text("abcd efgh " * 300)
>>> cfg = TrainConfig(data="shakespeare", model="gpt-tiny", data_dir=str(folder), block_size=16).validate()
>>> ds = load(cfg)
>>> cfg.quantize, cfg.steps_per_epoch, ds.num_classes, ds.num_examples("val")
('blocks', 100, 9, 18)
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..data import LM_DATASETS, load_dataset
from ..data.shakespeare import CharDataset, lm_batches, val_windows
from ..models import build
from . import distributed
from .metrics import error_percent

__all__ = ["is_lm", "load", "build_model", "train_batches", "evaluate", "training_bytes", "EVAL_BATCH"]

EVAL_BATCH = 64  # validation windows per forward pass
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def is_lm(cfg) -> bool:
    """Whether ``cfg`` trains a language model."""
    return cfg.data in LM_DATASETS


def load(cfg) -> CharDataset:
    """The run's text, its validation windows of ``cfg.block_size`` (one-line errors for missing or short text)."""
    if cfg.train_subset or cfg.val_size:
        raise ValueError(f"--train-subset/--val-size work on image datasets, not {cfg.data!r} (text: the first 90% "
                         "trains, the last 10% validates; --test-subset N limits validation to N windows)")
    ds = load_dataset(cfg.data, cfg.data_dir, download=cfg.download)
    ds.block_size = cfg.block_size
    if ds.num_examples("train") < 1 or ds.num_examples("val") < 1:
        raise ValueError(f"block_size={cfg.block_size} needs more than {cfg.block_size + 1} characters in each split; "
                         f"{cfg.data} has {len(ds.train_ids)} training and {len(ds.val_ids)} validation characters: "
                         f"use a smaller --block-size or a longer input.txt")
    return ds


def build_model(cfg, ds: CharDataset, device) -> nn.Module:
    """``cfg.model`` for the vocabulary of ``ds``, context ``cfg.block_size``, stored in ``cfg.weight_dtype``."""
    model = build(cfg.model, ds.num_classes, block_size=cfg.block_size)
    return model.to(device=device, dtype=DTYPES[cfg.weight_dtype])


def train_batches(ds: CharDataset, cfg, epoch: int, d: distributed.Dist, device):
    """The epoch's ``steps_per_epoch`` training batches (this rank's share)."""
    return lm_batches(ds, cfg.batch_size, cfg.block_size, seed=cfg.seed, epoch=epoch, steps=cfg.steps_per_epoch,
                      rank=d.rank, world_size=d.world_size, device=device)


@torch.no_grad()
def evaluate(net, ds: CharDataset, cfg, d: distributed.Dist, device) -> Tuple[float, float]:
    """Validation loss (nats per character) and next-character error (%), summed over ranks."""
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in val_windows(ds, cfg.block_size, EVAL_BATCH * d.world_size, limit=cfg.test_subset, rank=d.rank,
                            world_size=d.world_size, device=device):
        out = net(x)
        loss_sum += nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += int((out.argmax(-1) == y).sum())
        count += y.numel()
    loss_sum, correct, count = distributed.all_sum([loss_sum, correct, count], d, device)
    return loss_sum / max(count, 1), error_percent(int(correct), int(count))


def training_bytes(model: nn.Module, opt) -> dict:
    """Bytes training keeps between steps, measured from the tensors themselves: the model's
    parameters, the optimizer's state (e.g. Adam's moments, in whatever dtype they are) and BC's
    latent weights; per parameter in ``bytes_per_param`` (gradients, the same for every method, excluded)."""
    seen = set()

    def nbytes(t) -> int:
        if not isinstance(t, torch.Tensor) or t.data_ptr() in seen or t.numel() == 0:
            return 0
        seen.add(t.data_ptr())
        return t.numel() * t.element_size()

    params = sum(nbytes(p) for p in model.parameters())
    state = sum(nbytes(v) for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim)
    latents = sum(nbytes(t) for t in getattr(opt, "latents", []))
    n = sum(p.numel() for p in model.parameters())
    return {"params": params, "optimizer_state": state, "latents": latents,
            "bytes_per_param": (params + state + latents) / max(n, 1)}
