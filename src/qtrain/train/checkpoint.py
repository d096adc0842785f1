r"""Checkpoints with a content digest, written atomically (see :mod:`qtrain._io`) and read back
with one-line errors.

File layout: one header line, then the ``torch.save`` payload :math:`P`::

    QTRAIN-CHECKPOINT v2 sha256=<hex of SHA-256(P)>\n<P>

:func:`load_checkpoint` recomputes :math:`\mathrm{SHA256}(P)` and refuses the file unless it
matches, so any flipped bit, truncation or appended garbage gives the one-line "corrupt
checkpoint" error (a ``ValueError``: the CLI exits 2) instead of resuming from changed tensors.
It then checks the fields a run needs and their types (``epoch`` and ``step`` integers
:math:`\ge 0`, ``model``/``optimizer``/... mappings).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
>>> save_checkpoint(p, {"epoch": 0})
>>> load_checkpoint(p, require=("epoch",))["epoch"]
0
"""
from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Sequence, Union

import torch

from .._io import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
FORMAT = "qtrain-checkpoint-v1"
MAGIC = b"QTRAIN-CHECKPOINT v2 sha256="
# what a training run's checkpoint holds, and the type of each field
FIELDS = {"epoch": int, "step": int, "config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
          "tracker": dict, "history": list, "partial": dict}
_FIX = "delete it to start over, or restore a good copy"


def save_checkpoint(path: Union[str, Path], state: dict) -> None:
    """``torch.save`` ``state`` (plus a format tag) to ``path`` atomically, behind its digest."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: Union[str, Path], require: Sequence[str] = tuple(FIELDS)) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, after checking its digest and that
    the fields in ``require`` are present with the right types; one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the RUN_DIR of a run started with --out")
    raw = path.read_bytes()
    head, newline, payload = raw.partition(b"\n")
    if not head.startswith(MAGIC):
        why = "written by an older qtrain, without a digest" if raw[:2] == b"PK" else "no qtrain header"
        raise ValueError(f"corrupt checkpoint {path} ({why}); {_FIX}")
    if not newline or hashlib.sha256(payload).hexdigest().encode() != head[len(MAGIC):]:
        raise ValueError(f"corrupt checkpoint {path} (its SHA-256 digest does not match the content); {_FIX}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"corrupt checkpoint {path} ({first[:120]}); {_FIX}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        tag = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"{path} is not a qtrain checkpoint (format tag {tag!r}); {_FIX}")
    for key in require:
        kind = FIELDS[key]
        value = state.get(key)
        if key not in state or not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            what = "is missing" if key not in state else f"is {value!r}" if kind is int else f"is a {type(value).__name__}"
            need = "an integer >= 0" if kind is int else f"a {kind.__name__}"
            raise ValueError(f"corrupt checkpoint {path}: field {key!r} {what}, expected {need}; {_FIX}")
    where = f"corrupt checkpoint {path}:"
    if "history" in require:
        check_history(state["history"], where, _FIX)
    if "partial" in require:
        check_partial(state["partial"], where)
    for key in ("model", "tracker"):
        if key in require:
            bad = next((k for k, v in state[key].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
            if bad is not None:
                raise ValueError(f"{where} {key} entry {str(bad)[:40]!r} is not a named tensor; {_FIX}")
    return state


_ROW_NUMBERS = ("train_loss", "train_error", "test_loss", "test_error", "lr", "seconds", "train_seconds", "images_per_s")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_history(rows, where: str, fix: str) -> None:
    """Metrics rows as a run writes them: row ``i`` a mapping with ``epoch == i + 1``, numbers (or
    null) in the numeric fields, ``weight_change`` a mapping of layer names to numbers."""
    if not isinstance(rows, list):
        raise ValueError(f"{where} the history is a {type(rows).__name__}, not a list of rows; {fix}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("epoch") != i + 1 or isinstance(row.get("epoch"), bool):
            raise ValueError(f"{where} history row {i + 1} is not the row of epoch {i + 1}; {fix}")
        for key in _ROW_NUMBERS + ("weight_change",):
            if key not in row and key not in ("test_error", "weight_change"):
                continue
            v = row.get(key)
            ok = (isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())
                  if key == "weight_change" else v is None or _number(v))
            if not ok:
                raise ValueError(f"{where} history row {i + 1} has {key}={str(v)[:30]!r}; {fix}")


def check_partial(partial, where: str) -> None:
    """The running sums of a mid-epoch checkpoint: empty, or a finite scalar ``loss_sum`` tensor,
    integers ``0 <= correct <= count``, ``train_seconds >= 0`` and, under torchrun, per-rank rows."""
    if not partial:
        return
    loss, correct, count = partial.get("loss_sum"), partial.get("correct"), partial.get("count")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (correct, count))
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()
            and bool(torch.isfinite(loss)) and ints and 0 <= correct <= count):
        raise ValueError(f"{where} its running sums (loss_sum, correct, count) are not a finite loss sum and "
                         f"counts 0 <= correct <= count; {_FIX}")
    seconds = partial.get("train_seconds", 0.0)
    if not _number(seconds) or not 0 <= seconds < float("inf"):
        raise ValueError(f"{where} train_seconds={str(seconds)[:30]!r} is not a time; {_FIX}")
    ranks = partial.get("ranks")
    if ranks is not None and not (isinstance(ranks, torch.Tensor) and ranks.dim() == 2 and ranks.shape[1] == 3
                                  and ranks.shape[0] >= 1 and ranks.is_floating_point()
                                  and bool(torch.isfinite(ranks).all()) and bool((ranks[:, 1:] >= 0).all())
                                  and int(ranks[:, 2].sum()) == count and int(ranks[:, 1].sum()) == correct):
        raise ValueError(f"{where} its per-rank running sums do not add up to the totals; {_FIX}")
