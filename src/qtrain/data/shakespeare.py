r"""Character-level text for language modelling: Tiny Shakespeare (or any ``input.txt``).

The text :math:`c_1 \dots c_N` (UTF-8) is mapped to integer ids through its **character
vocabulary** :math:`V` = the sorted distinct characters of the whole file (65 for Tiny
Shakespeare). **[choice, the usual split]** the first :math:`\lfloor 0.9 N \rfloor`
characters train, the rest validate.

A training batch :math:`k` of epoch :math:`e` holds :math:`B` windows of length :math:`T`
(``block_size``) at offsets :math:`o_1 \dots o_B` drawn uniformly from
:math:`[0, N_{train} - T)` by a generator seeded with :math:`h(\text{seed}, e, k)`
(:func:`qtrain.data.derive_seed`); input :math:`x_b = c_{o_b} \dots c_{o_b+T-1}`, target the
next characters :math:`y_b = c_{o_b+1} \dots c_{o_b+T}`. The stream is a pure function of
``(seed, epoch, k)``: a resumed run redraws exactly the batches it skipped, and rank
:math:`r` of :math:`R` takes ``tensor_split(offsets, R)[r]``. An "epoch" is a fixed number of
steps (the trainer's ``steps_per_epoch``), not a pass over the text.

Validation uses every non-overlapping window of the validation split, in order:
:math:`x_i = c_{iT} \dots c_{iT+T-1}` (offsets relative to the split), so the validation loss

.. math::
    L_{val} = -\frac{1}{|W| T} \sum_{i \in W} \sum_{t} \log p(y_{i,t} \mid x_{i, \le t})

is in nats per character.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "input.txt").write_text("to be or not to be, that is the question. " * 40)
>>> ds = load_text(folder)
>>> len(ds.vocab), ds.num_classes, ds.decode(ds.train_ids[:5])
(15, 15, 'to be')
>>> x, y = next(lm_batches(ds, 4, 8, seed=0, epoch=0, steps=1))
>>> tuple(x.shape), torch.equal(x[:, 1:], y[:, :-1])
((4, 8), True)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import torch

from .base import PathLike, default_root, find_dir, missing_error
from .loader import derive_seed

__all__ = ["CharDataset", "load_shakespeare", "load_text", "lm_batches", "val_windows", "TRAIN_FRACTION"]

TRAIN_FRACTION = 0.9


@dataclass
class CharDataset:
    """A character-level corpus split into train and validation ids.

    Attributes:
        name: registry name (``"shakespeare"``).
        vocab: the characters, id ``i`` is ``vocab[i]``.
        train_ids, val_ids: ``int64`` tensors of character ids.
        block_size: validation window length :math:`T` used by :meth:`num_examples` (set by
            the trainer; 64 by default).
    """

    name: str
    vocab: str
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    block_size: int = 64

    @property
    def num_classes(self) -> int:
        """Vocabulary size :math:`|V|` (the model's number of output classes)."""
        return len(self.vocab)

    def num_examples(self, split: str) -> int:
        """Training: possible window offsets; ``"test"``/``"val"``: validation windows of ``block_size``."""
        if split == "train":
            return max(len(self.train_ids) - self.block_size, 0)
        if split in ("test", "val"):
            return (len(self.val_ids) - 1) // self.block_size
        raise ValueError(f"unknown split {split!r}; valid: 'train', 'val'")

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        try:
            return torch.tensor([index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary of {self.name}") from None

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def __repr__(self) -> str:
        return (f"CharDataset(name={self.name!r}, vocab={len(self.vocab)}, train={len(self.train_ids)} chars, "
                f"val={len(self.val_ids)} chars)")


def load_text(data_dir: Optional[PathLike] = None, name: str = "shakespeare", folder_names=("tinyshakespeare",),
              ) -> CharDataset:
    """Read ``input.txt`` from ``data_dir`` (or ``data_dir/tinyshakespeare``), build the vocabulary, split 90/10.

    Raises:
        FileNotFoundError: no ``input.txt`` there (one line naming ``--data-dir``).
        ValueError: the file is not UTF-8 text, or too short to hold a training and a validation character.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_root()
    folder = find_dir(root, list(folder_names), ["input.txt"])
    if folder is None:
        raise missing_error(f"{name} text (input.txt)", root, list(folder_names),
                            "pass --data-dir pointing at the folder holding input.txt (Tiny Shakespeare: "
                            "the char-rnn input.txt, 1,115,394 bytes)")
    path = folder / "input.txt"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); pass a UTF-8 input.txt") from None
    n_train = int(len(text) * TRAIN_FRACTION)
    if n_train < 2 or len(text) - n_train < 2:
        raise ValueError(f"{path} holds {len(text)} characters, too few to split 90/10 into training and "
                         f"validation text; use a longer input.txt")
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    return CharDataset(name, vocab, ids[:n_train].clone(), ids[n_train:].clone())


def load_shakespeare(data_dir: Optional[PathLike] = None, download: bool = False) -> CharDataset:
    """Tiny Shakespeare from ``data_dir`` (``input.txt`` there or in ``data_dir/tinyshakespeare``).

    ``download`` is refused: the file is small, put it in ``--data-dir`` yourself.
    """
    if download:
        raise ValueError("--download fetches CIFAR only; put Tiny Shakespeare's input.txt in --data-dir")
    return load_text(data_dir)


def lm_batches(ds: CharDataset, batch_size: int, block_size: int, *, seed: int, epoch: int, steps: int,
               rank: int = 0, world_size: int = 1, device: Union[str, torch.device] = "cpu"
               ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches of epoch ``epoch``: this rank's share of ``batch_size`` random windows.

    Yields ``(x, y)``, ``int64`` :math:`b \\times T` on ``device``; ``y`` is ``x`` shifted by one character.
    """
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"the global batch_size ({batch_size}) must be a positive multiple of world_size ({world_size})")
    span = len(ds.train_ids) - block_size
    if span < 1:
        raise ValueError(f"block_size={block_size} needs more than {block_size + 1} training characters, "
                         f"{ds.name} has {len(ds.train_ids)}; use a smaller --block-size or a longer text")
    steps_range = torch.arange(block_size + 1)
    for k in range(steps):
        g = torch.Generator().manual_seed(derive_seed(seed, epoch, k))
        offsets = torch.randint(0, span, (batch_size,), generator=g)
        if world_size > 1:
            offsets = torch.tensor_split(offsets, world_size)[rank]
        windows = ds.train_ids[offsets[:, None] + steps_range]
        windows = windows.to(device)
        yield windows[:, :-1], windows[:, 1:]


def val_windows(ds: CharDataset, block_size: int, batch_size: int, limit: Optional[int] = None, rank: int = 0,
                world_size: int = 1, device: Union[str, torch.device] = "cpu"
                ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The validation split's non-overlapping windows (the first ``limit`` if given), ``batch_size`` at a time,
    this rank's share of each batch."""
    n = (len(ds.val_ids) - 1) // block_size
    n = n if limit is None else min(n, limit)
    if n < 1:
        raise ValueError(f"block_size={block_size} is longer than the validation text ({len(ds.val_ids)} "
                         f"characters); use a smaller --block-size or a longer text")
    starts = torch.arange(n) * block_size
    steps_range = torch.arange(block_size + 1)
    for lo in range(0, n, batch_size):
        chunk = starts[lo:lo + batch_size]
        if world_size > 1:
            chunk = torch.tensor_split(chunk, world_size)[rank]
        windows = ds.val_ids[chunk[:, None] + steps_range].to(device)
        yield windows[:, :-1], windows[:, 1:]
