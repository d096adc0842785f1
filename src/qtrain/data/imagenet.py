r"""ImageNet (or any class-folder image set) read from ``train/<class>/*`` and ``val/<class>/*``.

Layout: ``data_dir/train/<wnid>/<file>.JPEG`` and ``data_dir/val/<wnid>/<file>.JPEG`` (the
usual layout after sorting the validation images into class folders), or the same under
``data_dir/imagenet/``. Classes are the sorted ``train/`` sub-folders; label :math:`k` is the
:math:`k`-th. Images are decoded with Pillow (``pip install qtrain[imagenet]``).

Transforms, implemented here with Pillow and explicit ``torch.Generator`` objects
(**[choice]**: torchvision's transforms draw from the global RNG, which would break the
"pure function of (seed, epoch, batch)" contract, so torchvision is not needed):

* train (``augment=True``): random-resized-crop to :math:`224^2` with area fraction
  :math:`s \sim U[0.08, 1]`, log-aspect :math:`\log r \sim U[\log\frac34, \log\frac43]`
  (10 tries, then a center crop; torchvision's rule), bilinear, then flip with p = 1/2;
* eval: resize the shorter side to 256 (bilinear), center crop :math:`224^2`.

Sample :math:`i` of global batch :math:`k` draws from a generator seeded with
:math:`h(\text{seed}, \text{epoch}, k, i)`, so results do not depend on workers or ranks.
Normalisation uses the usual ImageNet constants.

>>> from qtrain.data.imagenet import load_imagenet
>>> ds = load_imagenet("/data/imagenet")            # doctest: +SKIP
>>> ds.num_classes, len(ds.train_files)              # doctest: +SKIP
(1000, 1281167)
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .base import PathLike, default_root, find_dir, missing_error

__all__ = ["ImageFolderDataset", "load_imagenet", "folder_batches", "load_image",
           "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageNet decoding needs Pillow: pip install qtrain[imagenet]") from None
    return Image


@dataclass
class ImageFolderDataset:
    """File lists of a class-folder image set (same metadata as ``InMemoryDataset``).

    Attributes:
        name: registry name (``"imagenet"``).
        train_files, test_files: image paths (``test`` is the ``val/`` folder).
        train_y, test_y: ``int64`` labels, one per file.
        num_classes, mean, std, augment: as for ``InMemoryDataset``.
        classes: class folder names; label ``k`` is ``classes[k]``.
        image_size: side of the output crop (224).
        resize: eval resize of the shorter side (256).
    """

    name: str
    train_files: Tuple[str, ...]
    train_y: torch.Tensor
    test_files: Tuple[str, ...]
    test_y: torch.Tensor
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: bool
    classes: Tuple[str, ...] = ()
    image_size: int = 224
    resize: int = 256

    @property
    def channels(self) -> int:
        return 3

    def num_examples(self, split: str) -> int:
        """Number of images in ``split`` (``"train"`` or ``"test"``)."""
        return len(self.split(split)[0])

    def split(self, split: str) -> Tuple[Tuple[str, ...], torch.Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; valid: 'train', 'test'")
        return getattr(self, f"{split}_files"), getattr(self, f"{split}_y")

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(name={self.name!r}, train={len(self.train_files)}, "
                f"test={len(self.test_files)}, num_classes={self.num_classes})")


def _scan(folder: Path, classes: Sequence[str]) -> Tuple[List[str], List[int]]:
    files: List[str] = []
    labels: List[int] = []
    index = {c: k for k, c in enumerate(classes)}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        if entry.name not in index:
            raise ValueError(f"{folder}: class folder {entry.name!r} is not in train/")
        names = sorted(e.name for e in os.scandir(entry.path)
                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        files += [os.path.join(entry.path, n) for n in names]
        labels += [index[entry.name]] * len(names)
    return files, labels


def load_imagenet(data_dir: Optional[PathLike] = None, download: bool = False,
                  name: str = "imagenet") -> ImageFolderDataset:
    """Index ``train/`` and ``val/`` class folders (no download: ImageNet needs a login)."""
    _pil()
    root = Path(data_dir).expanduser() if data_dir is not None else default_root()
    folder = find_dir(root, ("imagenet",), ["train", "val"])
    if folder is None:
        raise missing_error("ImageNet", root, ("imagenet",),
                            "prepare DIR with train/<class>/*.JPEG and val/<class>/*.JPEG (ILSVRC2012 "
                            "from image-net.org, val/ sorted into class folders)")
    classes = sorted(e.name for e in os.scandir(folder / "train") if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder / 'train'} has no class folders")
    train_files, train_y = _scan(folder / "train", classes)
    test_files, test_y = _scan(folder / "val", classes)
    if not train_files:
        raise FileNotFoundError(f"{folder / 'train'} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageFolderDataset(
        name, tuple(train_files), torch.tensor(train_y, dtype=torch.int64), tuple(test_files),
        torch.tensor(test_y, dtype=torch.int64), len(classes), IMAGENET_MEAN, IMAGENET_STD,
        augment=True, classes=tuple(classes))


def _random_resized_crop_box(width: int, height: int, g: torch.Generator,
                             scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box rule, drawing from ``g``: ``(left, top, w, h)``."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(3, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return left, top, w, h
    in_ratio = width / height  # fallback: central crop at the nearest allowed aspect
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def load_image(path: str, train: bool, seed: int, size: int = 224, resize: int = 256
               ) -> torch.Tensor:
    """Decode and transform one image to ``uint8`` :math:`3 \\times size \\times size`."""
    Image = _pil()
    with Image.open(path) as im:
        im = im.convert("RGB")
        width, height = im.size
        if train:
            g = torch.Generator().manual_seed(seed)
            left, top, w, h = _random_resized_crop_box(width, height, g)
            out = im.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
            if bool(torch.randint(0, 2, (1,), generator=g)):
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            s = resize / min(width, height)
            nw, nh = max(size, round(width * s)), max(size, round(height * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            out = im.crop((left, top, left + size, top + size))
        arr = np.asarray(out, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class _Samples(torch.utils.data.Dataset):
    """Map-style view whose keys are ``(file index, per-sample seed)``."""

    def __init__(self, files, labels, train: bool, size: int, resize: int):
        self.files, self.labels, self.train, self.size, self.resize = files, labels, train, size, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        i, seed = key
        return load_image(self.files[i], self.train, seed, self.size, self.resize), self.labels[i]


def _collate(items, size: int = 224):
    xs, ys = zip(*items) if items else ((), ())
    x = torch.stack(xs) if xs else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return x, torch.tensor(ys, dtype=torch.int64)


def folder_batches(ds: ImageFolderDataset, split: str, batch_size: int, *, shuffle: bool,
                   augment: bool, seed: int, epoch: int, rank: int, world_size: int,
                   device: Union[str, torch.device], drop_last: bool,
                   num_workers: Optional[int] = None
                   ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``batches()`` for an :class:`ImageFolderDataset` (decoding in DataLoader workers)."""
    from .loader import _share, derive_seed, epoch_order, normalize
    files, labels = ds.split(split)
    n = len(files)
    k_total = n // batch_size if drop_last else -(-n // batch_size)
    order = epoch_order(n, shuffle, seed, epoch).tolist()
    keys: List[List[Tuple[int, int]]] = []
    for k in range(k_total):
        idx = order[k * batch_size:(k + 1) * batch_size]
        lo, hi = _share(len(idx), rank, world_size)
        keys.append([(idx[p], derive_seed(seed, epoch, k, p)) for p in range(lo, hi)])
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    train = bool(augment and ds.augment)
    loader = torch.utils.data.DataLoader(
        _Samples(files, labels.tolist(), train, ds.image_size, ds.resize), batch_sampler=keys,
        num_workers=num_workers, collate_fn=functools.partial(_collate, size=ds.image_size),
        pin_memory=torch.device(device).type == "cuda")
    device = torch.device(device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield normalize(x, ds.mean, ds.std), y
