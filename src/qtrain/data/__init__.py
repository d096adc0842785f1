r"""Datasets and deterministic batching for qtrain.

=========== ====================================== ===================== =========
name        source                                 ``x`` per split       augment
=========== ====================================== ===================== =========
cifar10     official python batches (or download)  N×3×32×32 uint8       yes
cifar100    official python batches (or download)  N×3×32×32 uint8       yes
mnist       the four IDX files (gzip or not)       N×1×28×28 uint8       no
imagenet    ``train/`` + ``val/`` class folders     files, 3×224×224      yes
digits      embedded 8×8 UCI digits (no download)  N×1×8×8 uint8         no
shakespeare ``input.txt`` (character level)        int64 character ids   no
=========== ====================================== ===================== =========

* :func:`load_dataset` returns an :class:`InMemoryDataset` (uint8 tensors) or, for ImageNet,
  an :class:`ImageFolderDataset` (file lists).
* :func:`batches` yields normalised ``float32`` batches, a pure function of
  ``(seed, epoch, batch index)``, split across data-parallel ranks; :func:`num_batches`
  counts them.
* ``shakespeare`` is text (:class:`~qtrain.data.shakespeare.CharDataset`): its batches come
  from :func:`~qtrain.data.shakespeare.lm_batches` (random windows) and
  :func:`~qtrain.data.shakespeare.val_windows`.
* :func:`qtrain.data.augment.pad_crop_flip` is the batched CIFAR augmentation.

>>> from qtrain.data import DATASETS, load_dataset, batches
>>> DATASETS
('cifar10', 'cifar100', 'mnist', 'imagenet', 'digits')
>>> ds = load_dataset("digits")
>>> x, y = next(batches(ds, "test", 100, shuffle=False, augment=False, seed=0, epoch=0))
>>> tuple(x.shape), y[:5].tolist()
((100, 1, 8, 8), [6, 3, 2, 1, 7])
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Union

from . import augment
from .augment import pad_crop_flip
from .base import InMemoryDataset, PathLike, channel_stats, default_root
from .cifar import DownloadError, load_cifar10, load_cifar100
from .embedded import load_digits
from .imagenet import ImageFolderDataset, load_imagenet
from .loader import batches, derive_seed, normalize, num_batches
from .mnist import load_mnist
from .shakespeare import CharDataset, lm_batches, load_shakespeare, val_windows

__all__ = ["DATASETS", "load_dataset", "batches", "num_batches", "InMemoryDataset",
           "ImageFolderDataset", "pad_crop_flip", "DownloadError", "channel_stats",
           "default_root", "derive_seed", "normalize", "augment", "CharDataset", "lm_batches", "val_windows",
           "LM_DATASETS"]

_LOADERS: Dict[str, Callable] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "mnist": load_mnist,
    "imagenet": load_imagenet,
    "digits": load_digits,
}
DATASETS = tuple(_LOADERS)  # images
_LOADERS["shakespeare"] = load_shakespeare
LM_DATASETS = ("shakespeare",)  # character-level text for language models


def load_dataset(name: str, data_dir: Optional[PathLike] = None, download: bool = False
                 ) -> Union[InMemoryDataset, ImageFolderDataset, CharDataset]:
    """Load dataset ``name`` from ``data_dir`` (default ``$QTRAIN_DATA`` or
    ``~/.cache/qtrain/data``).

    Args:
        name: one of :data:`DATASETS` or :data:`LM_DATASETS`.
        data_dir: a folder holding the data, or a parent of it (see each loader).
        download: fetch CIFAR-10/100 from the official source if missing (checksum-verified).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        FileNotFoundError: the files are missing (one line: expected path, how to get them).
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS + LM_DATASETS)}") from None
    return loader(data_dir, download=download)
