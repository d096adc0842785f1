r"""The embedded 8×8 digits: a dataset that ships inside the package and needs no download.

**Origin.** The 1797 images are the test set of the UCI *Optical Recognition of Handwritten
Digits* data set (E. Alpaydin, C. Kaynak, 1998; UCI Machine Learning Repository, licensed
CC BY 4.0), in the copy that scikit-learn distributes as ``load_digits()`` (scikit-learn is
BSD-3-Clause). 32×32 NIST bitmaps were divided into 4×4 blocks and the "on" pixels counted,
giving 8×8 images with values 0..16. scikit-learn is *not* a dependency: the arrays were
extracted once and are stored in ``digits.npz`` next to this file (~47 KB).

**Stored form.** Pixels rescaled to ``uint8`` as :math:`\mathrm{round}(v \cdot 255 / 16)`,
shape :math:`N \times 1 \times 8 \times 8`; labels 0..9. **[choice]** Fixed split in the
original order: the first 1497 images train, the last 300 test (class counts 146..152 train,
27..33 test).

>>> from qtrain.data.embedded import load_digits
>>> ds = load_digits()
>>> tuple(ds.train_x.shape), tuple(ds.test_x.shape), ds.num_classes, ds.augment
((1497, 1, 8, 8), (300, 1, 8, 8), 10, False)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import InMemoryDataset, PathLike, channel_stats

__all__ = ["load_digits", "DIGITS_FILE"]

DIGITS_FILE = Path(__file__).with_name("digits.npz")


def load_digits(data_dir: Optional[PathLike] = None, download: bool = False) -> InMemoryDataset:
    """The embedded 8×8 digits (``data_dir`` and ``download`` are ignored)."""
    if not DIGITS_FILE.exists():  # only if the package was installed without its data
        raise FileNotFoundError(f"embedded digits not found: expected {DIGITS_FILE}; "
                                f"reinstall qtrain with its package data")
    with np.load(DIGITS_FILE) as z:
        arrays = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    tx = torch.from_numpy(arrays["train_x"].astype(np.uint8))
    ex = torch.from_numpy(arrays["test_x"].astype(np.uint8))
    ty = torch.from_numpy(arrays["train_y"].astype(np.int64))
    ey = torch.from_numpy(arrays["test_y"].astype(np.int64))
    mean, std = channel_stats(tx)
    return InMemoryDataset("digits", tx, ty, ex, ey, 10, mean, std, augment=False, files=(str(DIGITS_FILE),))
