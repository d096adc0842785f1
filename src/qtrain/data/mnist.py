r"""MNIST from the four IDX files, gzipped or not.

Looked for (the first that holds the files wins): ``data_dir`` itself, ``data_dir/mnist/``,
``data_dir/MNIST/raw/`` (torchvision's layout). Each of
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` may be plain or end in ``.gz``; gzip is also detected by its magic
bytes.

IDX format: a big-endian header ``0x00 0x00 <type> <ndim>`` then ``ndim`` 32-bit sizes, then
the row-major payload (type ``0x08`` = unsigned byte; magic 2051 for images, 2049 labels).

The result has ``x`` of shape :math:`N \times 1 \times 28 \times 28` (``uint8``), 10 classes,
``augment=False``.

>>> from qtrain.data.mnist import load_mnist
>>> ds = load_mnist("data")             # doctest: +SKIP
>>> ds.train_x.shape, ds.mean                        # doctest: +SKIP
(torch.Size([60000, 1, 28, 28]), (0.130661,))
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import InMemoryDataset, PathLike, channel_stats, default_root, find_dir, missing_error

__all__ = ["load_mnist", "read_idx", "MNIST_FILES"]

MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array of its declared shape."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: damaged gzip ({e}; truncated download?); replace it with a complete copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes) "
                         f"but the payload has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _file(folder: Path, base: str) -> Path:
    for name in (base, base + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder / base}[.gz] is missing; the MNIST folder is incomplete")


def load_mnist(data_dir: Optional[PathLike] = None, download: bool = False) -> InMemoryDataset:
    """MNIST: 60000 train / 10000 test grey 28×28 digits, 10 classes (``augment=False``).

    ``download`` is accepted for a uniform signature but MNIST is never downloaded: the
    official host is not reliable, so the files must be placed by hand.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_root()
    markers = [f"{b}|{b}.gz" for b in MNIST_FILES.values()]
    folder = find_dir(root, ("mnist", "MNIST/raw"), markers)
    if folder is None:
        raise missing_error(
            "MNIST", root, ("mnist",),
            "place the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte"
            "[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) there")
    arrays = {k: read_idx(_file(folder, v)) for k, v in MNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        fx, fy = _file(folder, MNIST_FILES[f"{split}_x"]), _file(folder, MNIST_FILES[f"{split}_y"])
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ValueError(f"{fx}: MNIST images must be uint8 N×28×28, got {x.dtype} {x.shape}; "
                             "replace it with the official file")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise ValueError(f"{fy}: MNIST labels must be {len(x)} integers (one per image in {fx.name}), "
                             f"got {y.dtype} {y.shape}; replace it with the official file")
        if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
            raise ValueError(f"{fy}: MNIST labels {int(y.min())}..{int(y.max())} are outside 0..9; "
                             "replace it with the official file")
    tx = torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1)
    ex = torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1)
    ty = torch.from_numpy(arrays["train_y"].astype(np.int64))
    ey = torch.from_numpy(arrays["test_y"].astype(np.int64))
    mean, std = channel_stats(tx)
    files = tuple(str(_file(folder, v)) for v in MNIST_FILES.values())
    return InMemoryDataset("mnist", tx, ty, ex, ey, 10, mean, std, augment=False, files=files)
