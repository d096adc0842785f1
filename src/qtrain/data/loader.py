r"""Deterministic, rank-aware batching: ``batches()`` and ``num_batches()``.

One epoch of split ``split`` with global batch :math:`B` is the sequence of index blocks

.. math::
    I_k = \pi[kB, \min((k+1)B, N)), \qquad k = 0, \dots, K - 1,

where :math:`\pi` is ``torch.randperm(N)`` drawn from a generator seeded with
:math:`h(\text{seed}, \text{epoch})` (identity when ``shuffle=False``), and
:math:`K = \lfloor N/B \rfloor` with ``drop_last`` else :math:`\lceil N/B \rceil`.
Batch :math:`k`'s augmentation is drawn for all of :math:`I_k` from a generator seeded with
:math:`h(\text{seed}, \text{epoch}, k)`; rank :math:`r` of :math:`R` then takes the contiguous
share ``torch.tensor_split(I_k, R)[r]`` (rows :math:`[rB/R, (r+1)B/R)` of a full batch) and the
matching augmentation parameters. Hence:

* the stream is a pure function of ``(seed, epoch, k)``: replaying an epoch after a resume
  gives identical batches, and every rank agrees on :math:`\pi`;
* the concatenation over ranks of batch :math:`k` equals the single-process batch :math:`k`,
  so the averaged gradient's data does not depend on the world size (batch-norm statistics,
  computed per rank's share as usual under DDP, still do);
* the global RNG is never touched (:math:`h` is a splitmix64-style hash).

Each yielded ``x`` is ``float32`` :math:`b \times C \times H \times W`, normalised after
augmentation as :math:`(x/255 - \mu_c)/\sigma_c`, on ``device``; ``y`` is ``int64``
:math:`b`. The ``uint8`` batch is gathered on the CPU, moved to ``device`` and augmented and
normalised there (so on a GPU the host only moves bytes).

>>> from qtrain.data import load_dataset, batches, num_batches
>>> ds = load_dataset("digits")
>>> num_batches(ds, "train", 128), num_batches(ds, "test", 128)
(11, 3)
>>> x, y = next(batches(ds, "train", 128, shuffle=True, augment=False, seed=0, epoch=0))
>>> tuple(x.shape), x.dtype, y.dtype
((128, 1, 8, 8), torch.float32, torch.int64)
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple, Union

import torch

from .augment import apply_pad_crop_flip, sample_pad_crop_flip
from .base import InMemoryDataset

__all__ = ["batches", "num_batches", "derive_seed", "normalize", "epoch_order"]

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """Hash integers into a 63-bit seed: ``derive_seed(seed, epoch, k)``; order matters."""
    h = 0x5171A1E  # stream tag so data seeds differ from other users of the same seed
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _M64))
    return h & ((1 << 63) - 1)


def _drop_last(split: str, drop_last: Optional[bool]) -> bool:
    return (split == "train") if drop_last is None else bool(drop_last)


def num_batches(ds, split: str, batch_size: int, drop_last: Optional[bool] = None) -> int:
    """Number of global batches per epoch of ``split`` (``drop_last`` default: train only)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = ds.num_examples(split)
    return n // batch_size if _drop_last(split, drop_last) else -(-n // batch_size)


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation :math:`\\pi` of ``range(n)`` (int64, CPU)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``uint8`` :math:`N \\times C \\times H \\times W` → ``float32`` :math:`(x/255-\\mu_c)/\\sigma_c`."""
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    scale = 1.0 / (255.0 * s)
    return x.to(torch.float32).mul_(scale).sub_(m / s)


def _check(batch_size: int, rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"the global batch_size ({batch_size}) must be a positive multiple of "
                         f"world_size ({world_size})")


def batches(ds, split: str, batch_size: int, *, shuffle: bool, augment: bool, seed: int,
            epoch: int, rank: int = 0, world_size: int = 1,
            device: Union[str, torch.device] = "cpu", drop_last: Optional[bool] = None,
            num_workers: Optional[int] = None
            ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Iterate over one epoch of ``split``, yielding this rank's ``(x, y)`` share of each batch.

    Args:
        ds: an :class:`~qtrain.data.base.InMemoryDataset` or
            :class:`~qtrain.data.imagenet.ImageFolderDataset`.
        split: ``"train"`` or ``"test"``.
        batch_size: the GLOBAL batch :math:`B`; must be a multiple of ``world_size``.
        shuffle: permute the examples (seeded by ``seed``, ``epoch``).
        augment: apply the dataset's augmentation (pad-4 crop + flip for in-memory data; only
            if ``ds.augment``; random-resized-crop + flip for ImageNet) — else none (ImageNet:
            resize 256 + center crop 224).
        seed, epoch: determine order and augmentation completely.
        rank, world_size: data-parallel position; rank ``r`` gets a contiguous ``B/R`` rows.
        device: where ``x`` and ``y`` are returned (and augmentation runs).
        drop_last: drop a final partial batch (default: True for train, False for test). A
            partial batch is split like a full one by ``torch.tensor_split``, so every rank
            yields the same number of batches (a share may be small, or empty if fewer
            examples than ranks remain).
        num_workers: ImageNet only: DataLoader worker processes (default ``min(8, cpus)``).

    Yields:
        ``x``: ``float32`` :math:`b \\times C \\times H \\times W` normalised, ``y``: ``int64``
        :math:`b`, both on ``device``.
    """
    _check(batch_size, rank, world_size)  # eagerly: errors surface at the call, not at next()
    if not isinstance(ds, InMemoryDataset):
        from .imagenet import ImageFolderDataset, folder_batches
        if isinstance(ds, ImageFolderDataset):
            ds.split(split)
            return folder_batches(ds, split, batch_size, shuffle=shuffle, augment=augment,
                                  seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                                  device=device, drop_last=_drop_last(split, drop_last),
                                  num_workers=num_workers)
        raise TypeError(f"batches() needs an InMemoryDataset or ImageFolderDataset, got "
                        f"{type(ds).__name__}")
    ds.split(split)
    return _memory_batches(ds, split, batch_size, shuffle, augment, seed, epoch, rank,
                           world_size, torch.device(device), drop_last)


def _memory_batches(ds: InMemoryDataset, split: str, batch_size: int, shuffle: bool,
                    augment: bool, seed: int, epoch: int, rank: int, world_size: int,
                    device: torch.device, drop_last: Optional[bool]
                    ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    xs, ys = ds.split(split)
    n = xs.shape[0]
    k_total = num_batches(ds, split, batch_size, drop_last)
    order = epoch_order(n, shuffle, seed, epoch)
    do_aug = augment and ds.augment
    for k in range(k_total):
        idx = order[k * batch_size:(k + 1) * batch_size]
        if do_aug:
            g = torch.Generator().manual_seed(derive_seed(seed, epoch, k))
            params = sample_pad_crop_flip(idx.numel(), g)
        if world_size > 1:
            lo, hi = _share(idx.numel(), rank, world_size)
            idx = idx[lo:hi]
            if do_aug:
                params = tuple(p[lo:hi] for p in params)
        x = xs.index_select(0, idx)
        y = ys.index_select(0, idx)
        if device.type != "cpu":
            x = x.to(device)  # move uint8 bytes; augment + normalise on the device
            y = y.to(device)
        if do_aug:
            x = apply_pad_crop_flip(x, *params)
        yield normalize(x, ds.mean, ds.std), y


def _share(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Bounds of ``torch.tensor_split(range(n), world_size)[rank]``."""
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)
