r"""CIFAR-10 and CIFAR-100 from the official python-format folders.

Layouts accepted for ``data_dir`` (the first that holds the files wins):

* CIFAR-10: ``data_dir`` itself holding ``data_batch_1..5`` and ``test_batch``, or
  ``data_dir/cifar-10-batches-py/`` (the official archive's folder, also torchvision's), or
  ``data_dir/cifar10/``.
* CIFAR-100: ``data_dir`` itself holding ``train`` and ``test``, or
  ``data_dir/cifar-100-python/``, or ``data_dir/cifar100/``.

Each file is a Python-2 pickle of ``{b'data': uint8 N×3072 (R, G, B planes of 32×32),
b'labels' | b'fine_labels': list of ints}``. They are read with a restricted unpickler that
only resolves numpy's array-rebuilding functions, so a tampered file cannot run code, and
checked before training: a truncated, empty or garbage file, pixels that are not ``uint8`` or
labels outside :math:`0..K-1` give one ``ValueError`` naming the file.
The result is an :class:`~qtrain.data.base.InMemoryDataset` with ``x`` of shape
:math:`N \times 3 \times 32 \times 32` (``uint8``) and ``augment=True``.

With ``download=True`` a missing dataset is fetched from the official source into
``data_dir`` (to a temporary file, moved into place only after its MD5 verifies) and
extracted; otherwise a missing dataset raises one ``FileNotFoundError`` naming the expected
path. No network access happens unless ``download=True``.

>>> from qtrain.data.cifar import load_cifar10
>>> ds = load_cifar10("data")          # doctest: +SKIP
>>> ds.train_x.shape, ds.test_x.shape                # doctest: +SKIP
(torch.Size([50000, 3, 32, 32]), torch.Size([10000, 3, 32, 32]))
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .base import InMemoryDataset, PathLike, channel_stats, default_root, find_dir, missing_error

__all__ = ["load_cifar10", "load_cifar100", "download_archive", "extract_archive",
           "DownloadError", "CIFAR10", "CIFAR100"]

# name -> (folder names to look for, marker files, archive URL, archive MD5, top folder in archive)
CIFAR10 = dict(
    names=("cifar-10-batches-py", "cifar10"),
    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
    label_key="labels", num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR100 = dict(
    names=("cifar-100-python", "cifar100"),
    train=("train",), test=("test",),
    label_key="fine_labels", num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)


class DownloadError(FileNotFoundError):
    """A download failed (network, checksum or archive); the dataset is still missing."""


class _Refused(pickle.UnpicklingError, ValueError):
    """A CIFAR file asked for a global other than numpy's array rebuilders."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals that a pickled numpy array needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name} from a CIFAR file")


_FIX_FILE = "replace it with the file from the official archive (or --download into an empty --data-dir)"


def _read_batch(path: Path, label_key: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch, checked: a readable pickle, ``uint8`` pixels, N×3072, N integer labels
    in ``0..num_classes-1``; anything else is one ``ValueError`` naming the file and the fix."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if len(head) < 2 or head[0] != 0x80:  # pickle protocol >= 2 (the official files use 2)
                raise ValueError("empty" if not head else "not a pickle")
            f.seek(0)
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, MemoryError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OverflowError, UnicodeDecodeError, ImportError) as e:
        if isinstance(e, _Refused):
            raise _Refused(f"{path}: {e}; {_FIX_FILE}") from None
        why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable CIFAR python batch ({type(e).__name__}: {why}; truncated or "
                         f"damaged?); {_FIX_FILE}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a CIFAR python batch (holds a {type(d).__name__}); {_FIX_FILE}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise ValueError(f"{path}: not a CIFAR python batch (keys {sorted(map(str, d))}; "
                         f"need 'data' and {label_key!r})")
    raw = d["data"]
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        kind = raw.dtype if isinstance(raw, np.ndarray) else type(raw).__name__
        raise ValueError(f"{path}: 'data' is {kind}, CIFAR pixels must be uint8 0..255; {_FIX_FILE}")
    labels = np.asarray(d[label_key])
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: {label_key!r} are {labels.dtype}, not integers; {_FIX_FILE}")
    labels = labels.astype(np.int64)
    if raw.ndim != 2 or raw.shape[1] != 3072 or labels.shape != (raw.shape[0],):
        raise ValueError(f"{path}: expected data N×3072 and N labels, got {raw.shape} "
                         f"and {labels.shape}; {_FIX_FILE}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels {int(labels.min())}..{int(labels.max())} are outside "
                         f"0..{num_classes - 1}; {_FIX_FILE}")
    return raw.reshape(-1, 3, 32, 32), labels


def _load_split(folder: Path, files: Tuple[str, ...], label_key: str, num_classes: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    xs: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    for name in files:
        p = folder / name
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing; the CIFAR folder {folder} is incomplete")
        x, y = _read_batch(p, label_key, num_classes)
        xs.append(x)
        ys.append(y)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


def download_archive(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``: stream into a temp file beside it, check the MD5, then
    move it into place atomically. A present ``dest`` with the right MD5 is reused.

    Raises:
        DownloadError: the network failed or the checksum did not match (nothing is left).
    """
    dest = Path(dest)
    if dest.exists() and _md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                        out.write(chunk)
            except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
                raise DownloadError(f"could not download {url} ({e}); fetch it by hand and "
                                    f"place it at {dest}") from None
        if h.hexdigest() != md5:
            raise DownloadError(f"checksum mismatch for {url}: md5 {h.hexdigest()}, expected "
                                f"{md5}; the file was discarded")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_archive(archive: Path, root: Path) -> None:
    """Extract a ``.tar.gz`` into ``root``, refusing members that would land outside it
    (absolute paths, ``..``, links). Extracts into a temp folder first, then moves each
    top-level entry into place, so an interrupted extraction leaves no half folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (tmp / m.name).resolve()
                if not (m.isfile() or m.isdir()) or not str(target).startswith(str(tmp.resolve())):
                    raise DownloadError(f"{archive}: unsafe archive member {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - old Pythons; members were checked above
                tar.extractall(tmp, members=members)
        for entry in tmp.iterdir():
            final = root / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(entry, final)
    except tarfile.TarError as e:
        raise DownloadError(f"{archive}: not a valid tar archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(name: str, spec: dict, data_dir: Optional[PathLike], download: bool) -> InMemoryDataset:
    root = Path(data_dir).expanduser() if data_dir is not None else default_root()
    markers = list(spec["train"]) + list(spec["test"])
    folder = find_dir(root, spec["names"], markers[:1] + markers[-1:])
    if folder is None and download:
        archive = download_archive(spec["url"], root / spec["url"].rsplit("/", 1)[1], spec["md5"])
        extract_archive(archive, root)
        folder = find_dir(root, spec["names"], markers[:1] + markers[-1:])
    if folder is None:
        pretty = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
        raise missing_error(
            pretty, root, spec["names"],
            f"pass download=True (qtrain: --download) or get {spec['url']} and extract it "
            f"into {root}")
    k = spec["num_classes"]
    train_x, train_y = _load_split(folder, spec["train"], spec["label_key"], k)
    test_x, test_y = _load_split(folder, spec["test"], spec["label_key"], k)
    mean, std = channel_stats(train_x)
    files = tuple(str(folder / f) for f in spec["train"] + spec["test"])
    return InMemoryDataset(name, train_x, train_y, test_x, test_y, k, mean, std, augment=True, files=files)


def load_cifar10(data_dir: Optional[PathLike] = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-10: 50000 train / 10000 test RGB 32×32 images, 10 classes (``augment=True``)."""
    return _load("cifar10", CIFAR10, data_dir, download)


def load_cifar100(data_dir: Optional[PathLike] = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-100 (fine labels): 50000 train / 10000 test RGB 32×32, 100 classes."""
    return _load("cifar100", CIFAR100, data_dir, download)
