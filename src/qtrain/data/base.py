r"""The in-memory dataset record and the helpers every loader shares.

A small dataset (CIFAR, MNIST, the embedded digits) lives in memory as ``uint8`` tensors of
shape :math:`N \times C \times H \times W` (pixels 0..255) plus ``int64`` labels of shape
:math:`N`. Nothing is converted to float until a batch is drawn (see :func:`qtrain.data.batches`),
so CIFAR-10 costs 150 MiB, not 600.

``mean`` and ``std`` are per channel, in :math:`[0, 1]` pixel units, and are what
:func:`qtrain.data.batches` normalises with:

.. math::
    \hat x_{nchw} = (x_{nchw} / 255 - \mu_c) / \sigma_c .

**[choice]** For in-memory datasets they are computed *exactly* from the training split (a
256-bin histogram per channel), not copied from the literature, so they match the data that
is actually loaded (the JPEG-rebuilt development CIFAR-10 has a slightly smaller std than the
official one) and work for any new dataset.

>>> import torch
>>> from qtrain.data.base import InMemoryDataset, channel_stats
>>> x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
>>> channel_stats(x)
((0.5,), (0.5,))
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["InMemoryDataset", "channel_stats", "default_root", "find_dir", "missing_error",
           "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class InMemoryDataset:
    """A dataset held in memory as ``uint8`` images and ``int64`` labels.

    Attributes:
        name: the registry name (``"cifar10"``, ...).
        train_x: ``uint8`` tensor :math:`N_{train} \\times C \\times H \\times W`.
        train_y: ``int64`` tensor :math:`N_{train}`.
        test_x, test_y: the same for the test split.
        num_classes: number of classes :math:`K`; labels lie in :math:`[0, K)`.
        mean, std: per-channel normalisation constants in :math:`[0, 1]` pixel units.
        augment: whether the pad-crop-flip augmentation applies (True for CIFAR).
        files: the files it was read from (their digest is :func:`qtrain.data.digest.data_sha256`).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: bool
    files: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: {split}_x must be a uint8 N×C×H×W tensor, "
                                 f"got {x.dtype} of shape {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: {split}_y must be int64 of shape "
                                 f"({x.shape[0]},), got {y.dtype} of shape {tuple(y.shape)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} entries")

    @property
    def channels(self) -> int:
        """Number of image channels :math:`C`."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height :math:`H` (all built-in datasets are square)."""
        return int(self.train_x.shape[2])

    def num_examples(self, split: str) -> int:
        """Number of examples in ``split`` (``"train"`` or ``"test"``)."""
        return int(self.split(split)[0].shape[0])

    def split(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``split``; ``split`` must be ``"train"`` or ``"test"``."""
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; valid: 'train', 'test'")
        return getattr(self, f"{split}_x"), getattr(self, f"{split}_y")

    def __repr__(self) -> str:
        c, h, w = self.train_x.shape[1:]
        return (f"InMemoryDataset(name={self.name!r}, train={self.num_examples('train')}, "
                f"test={self.num_examples('test')}, shape={c}x{h}x{w}, "
                f"num_classes={self.num_classes}, augment={self.augment})")


def channel_stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    r"""Exact per-channel mean and (population) std of ``uint8`` images, in :math:`[0,1]` units.

    Uses a 256-bin histogram per channel, so it needs no float copy of the data.

    Args:
        x: ``uint8`` tensor :math:`N \times C \times H \times W`.

    Returns:
        ``(mean, std)``, each a tuple of :math:`C` floats.
    """
    arr = x.numpy() if x.device.type == "cpu" else x.cpu().numpy()
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(arr.shape[1]):
        counts = np.bincount(arr[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        m = float((counts * levels).sum() / total)
        var = float((counts * (levels - m) ** 2).sum() / total)
        means.append(round(m, 6))
        stds.append(round(max(var, 1e-12) ** 0.5, 6))
    return tuple(means), tuple(stds)


def default_root() -> Path:
    """The data root used when ``data_dir`` is None: ``$QTRAIN_DATA`` or ``~/.cache/qtrain/data``."""
    env = os.environ.get("QTRAIN_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/qtrain/data").expanduser()


def find_dir(root: Path, names: Sequence[str], marker: Iterable[str]) -> Optional[Path]:
    """The first of ``root`` itself, then ``root/<name>`` for each name, that holds every file
    (or any variant listed as ``a|b``) in ``marker``; None if none does."""
    markers = list(marker)

    def has_all(d: Path) -> bool:
        return d.is_dir() and all(any((d / alt).exists() for alt in m.split("|")) for m in markers)

    for d in [root] + [root / n for n in names]:
        if has_all(d):
            return d
    return None


def missing_error(what: str, root: Path, names: Sequence[str], how: str) -> FileNotFoundError:
    """One-line FileNotFoundError naming where ``what`` was looked for and how to get it."""
    where = f"{root / names[0]} (or the files directly in {root})" if names else str(root)
    return FileNotFoundError(f"{what} not found: expected {where}; {how}")
