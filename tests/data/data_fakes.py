"""Tiny fake datasets written in the official on-disk formats (helpers for tests/data)."""
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_cifar_batch(path: Path, n: int, num_classes: int, label_key: bytes, seed: int):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key: [int(v) for v in rng.integers(0, num_classes, n)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def make_cifar10(folder: Path, n: int = 12):
    """data_batch_1..5 (n each) + test_batch (n) in ``folder``; returns the dicts in order."""
    out = [write_cifar_batch(folder / f"data_batch_{i}", n, 10, b"labels", i) for i in range(1, 6)]
    out.append(write_cifar_batch(folder / "test_batch", n, 10, b"labels", 99))
    return out


def make_cifar100(folder: Path, n: int = 30):
    tr = write_cifar_batch(folder / "train", n, 100, b"fine_labels", 1)
    te = write_cifar_batch(folder / "test", n // 2, 100, b"fine_labels", 2)
    return tr, te


def write_idx(path: Path, arr: np.ndarray, gz: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def make_mnist(folder: Path, gz: bool, n_train: int = 20, n_test: int = 10):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / name, a, gz)
    return arrays


def make_tar_gz(src_dir: Path, top: str, archive: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_dir, arcname=top)
    archive.write_bytes(buf.getvalue())
    return archive

