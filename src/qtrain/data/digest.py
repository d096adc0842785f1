r"""A dataset's digest: which bytes a run trained and tested on.

``data_sha256(ds)`` is the SHA-256 of the listing that ``sha256sum`` prints for the files the
dataset was read from, in the order read, one line ``<hex digest>  <file name>`` each (the name
without its folder, so the digest does not depend on where the data lives). For CIFAR-10
the check by hand is ``cd DIR && sha256sum data_batch_1 data_batch_2 data_batch_3 data_batch_4
data_batch_5 test_batch | sha256sum``; for the embedded digits it covers ``digits.npz``.
Datasets read lazily from image folders (ImageNet) have no digest (``None``): hashing 1.3 M
files per run would cost more than the run's first epoch.

Each file is hashed once per process and kept by (path, size, modification time), so the runs
of a Table 1 worker read CIFAR-10's 180 MB once (about half a second).

>>> from qtrain.data import load_dataset
>>> len(data_sha256(load_dataset("digits")))
64
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["data_sha256", "files_sha256"]

_CACHE: Dict[Tuple[str, int, int], str] = {}


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def files_sha256(paths: Sequence[str]) -> str:
    """SHA-256 of the ``sha256sum`` listing of ``paths`` (base names, in the order given)."""
    listing = "".join(f"{_file_sha256(p)}  {os.path.basename(p)}\n" for p in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def data_sha256(ds) -> Optional[str]:
    """The digest of the files ``ds`` was loaded from; ``None`` when it records none (image folders)."""
    files = getattr(ds, "files", ())
    return files_sha256(files) if files else None
