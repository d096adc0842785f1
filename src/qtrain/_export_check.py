r"""Checks that a ``.safetensors`` export is what its header says, before a tensor is built.

Safetensors layout: ``<u64 little-endian n><n bytes of JSON header><data>``. The header maps
tensor names to ``{"dtype", "shape", "data_offsets": [b, e]}`` (offsets into ``data``) and
may hold ``__metadata__``, a map of text to text. :func:`parse_header` accepts a header only if

* the JSON has no duplicate keys (a second entry for a name would silently win);
* every dtype is in the allow-list and :math:`e - b = \mathrm{itemsize} \cdot \prod \mathrm{shape}`;
* the ranges, sorted, are contiguous from 0, do not overlap and end exactly at ``len(data)``
  (the format's rule: the data is fully indexed, without holes);
* ``__metadata__`` maps text to text.

qtrain's exports also carry :math:`\mathrm{SHA256}(\mathrm{data})` in ``__metadata__``
(key ``qtrain.sha256``, hex text, so other safetensors readers still load the file);
:func:`check_digest` recomputes it. Every refusal is one ``ValueError`` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, Iterable, Tuple

DIGEST_KEY = "qtrain.sha256"
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 << 20  # bytes of JSON header (the format's own readers cap it at 100 MB)


def digest(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the data section, given as consecutive chunks."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:60]!r} in the header")
        out[k] = v
    return out


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_header(path: Path, head: bytes, data_len: int) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """``(tensors, metadata)`` of a header whose data section has ``data_len`` bytes; see above."""
    fix = "re-export it from the run (qtrain export RUN --out FILE)"
    try:
        header = json.loads(head.decode("utf-8"), object_pairs_hook=_pairs)
    except ValueError as e:  # includes UnicodeDecodeError and duplicate keys
        raise ValueError(f"{path} is not a readable safetensors file ({' '.join(str(e).split())[:80]}); {fix}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (its header is not a JSON object); {fix}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{path}: __metadata__ must map text to text; {fix}")
    spans = []
    for name, h in header.items():
        if not isinstance(h, dict) or set(h) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: entry {name[:60]!r} must hold exactly dtype, shape and data_offsets; {fix}")
        dtype, shape, offsets = h["dtype"], h["shape"], h["data_offsets"]
        if dtype not in ITEMSIZE:
            raise ValueError(f"{path}: tensor {name[:60]!r} has dtype {str(dtype)[:20]!r}, not one of "
                             f"{', '.join(ITEMSIZE)}; {fix}")
        if not isinstance(shape, list) or not all(_int(s) for s in shape) or len(shape) > 64:
            raise ValueError(f"{path}: tensor {name[:60]!r} has shape {str(shape)[:40]}, not a list of sizes; {fix}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o) for o in offsets) \
                or offsets[0] > offsets[1]:
            raise ValueError(f"{path}: tensor {name[:60]!r} has data_offsets {str(offsets)[:40]}; {fix}")
        need = math.prod(shape) * ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != need:
            raise ValueError(f"{path}: tensor {name[:60]!r} is {dtype} of shape {tuple(shape)} ({need} bytes) but "
                             f"its data range holds {offsets[1] - offsets[0]} bytes; {fix}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for b, e, name in sorted(spans):
        if b != end:
            what = "overlaps the previous tensor's" if b < end else "leaves a gap after the previous tensor's"
            raise ValueError(f"{path}: the data range of tensor {name[:60]!r} {what}; {fix}")
        end = e
    if end != data_len:
        raise ValueError(f"{path}: the header indexes {end} bytes of data, the file holds {data_len}; "
                         f"(truncated or padded?) {fix}")
    return header, meta


def check_digest(path: Path, meta: Dict[str, str], data: memoryview) -> None:
    """Refuse the file unless ``meta`` carries the SHA-256 of ``data`` (see the module docstring)."""
    want = meta.get(DIGEST_KEY)
    if want is None:
        raise ValueError(f"{path} carries no data digest ({DIGEST_KEY}; written by an older qtrain?); "
                         "re-export it from the run (qtrain export RUN --out FILE)")
    if digest([data]) != want:
        raise ValueError(f"{path} is corrupt: the SHA-256 of its data does not match the digest in its header; "
                         "re-export it from the run (qtrain export RUN --out FILE)")
