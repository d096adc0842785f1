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
import math
import os
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


MAX_IDX_BYTES = 1 << 31  # payload limit (MNIST's training images are 47 MB)


def read_idx(path: PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array of its declared shape.

    The header is read and checked first (magic, type, sizes; payload at most ``max_bytes``),
    then exactly the declared payload is read: a gzip "bomb" or a file whose header declares
    terabytes is refused before anything large is decompressed or allocated."""
    path = Path(path)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise ValueError(f"{path}: not an IDX file (bad magic {head.hex()})")
            dtype, ndim = np.dtype(_DTYPES[head[2]]), head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{path}: IDX header cut short (truncated download?); replace it with a complete copy")
            shape = tuple(int(v) for v in np.frombuffer(dims, dtype=">u4"))
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            if nbytes > max_bytes:
                raise ValueError(f"{path}: header declares shape {shape} ({nbytes:,} bytes), more than the "
                                 f"{max_bytes:,} an IDX dataset file may hold; replace it with the official file")
            if not gz:
                have = os.fstat(raw.fileno()).st_size - 4 - 4 * ndim
                if have != nbytes:
                    raise ValueError(f"{path}: header says shape {shape} ({nbytes} bytes) but the payload has "
                                     f"{have} bytes")
            payload = f.read(nbytes)
            extra = f.read(1)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: damaged gzip ({e}; truncated download?); replace it with a complete copy") from None
    if len(payload) != nbytes or extra:
        raise ValueError(f"{path}: header says shape {shape} ({nbytes} bytes) but the payload has "
                         f"{'more' if extra else len(payload)} bytes")
    return np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)


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
