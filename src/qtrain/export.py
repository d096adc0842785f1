r"""Compact export of a trained quantized model as a ``.safetensors`` file.

Each quantized tensor is stored as its bit-packed integer codes (:mod:`qtrain.codes`):
1 bit per binary weight, 2 per ternary weight, :math:`b` per :math:`b`-bit uniform weight,
8 or 16 per float-format weight; every other tensor of the model's ``state_dict`` (biases,
batch-norm weights and statistics, float layers) is stored as it is. The file size is

.. math::
    8 + H + \sum_{\text{quantized}} \lceil n_i b_i / 8\rceil + \sum_{\text{other}} n_j\,\mathrm{bytes}_j

with :math:`H` the JSON header (tensor names, shapes, offsets; for each quantized tensor its
grid, shape and code width in the ``__metadata__`` map).

The container is the safetensors layout, written and read here without extra
dependencies: an 8-byte little-endian header length, a JSON header (padded with spaces
to a multiple of 8), then the raw little-endian tensor bytes, back to back. Packed tensors
appear as ``U8`` byte arrays; other safetensors readers can open the file, and
:func:`load` turns the codes back into the exact weights (float64 tensors: their float64
levels :math:`k\Delta`; the stored ``dtype`` says which).

Memory: each quantized tensor is encoded and packed chunk by chunk (:func:`qtrain.codes.pack_values`),
the file is written tensor by tensor from the packed bytes and the model's own tensors, and read
back tensor by tensor: the peak is the packed bytes plus one chunk's temporaries (a benchmark,
``benchmarks/bench_export_memory.py``, measures it).

>>> import torch, tempfile, os
>>> from qtrain import Grid, QuantizedOptimizer, conv_weights
>>> from qtrain import export
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
>>> opt = QuantizedOptimizer(torch.optim.Adam(net.parameters()), "sr", Grid.binary(0.1), params=conv_weights(net))
>>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
>>> info = export.save(net, opt, path)
>>> info["packed_bytes"], info["float_bytes"]  # 72 binary weights: 9 bytes; 8 + 16 + 2 floats
(9, 104)
>>> fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
>>> _ = export.load(fresh, path)
>>> all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))
True
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from ._io import atomic_write_bytes
from .codes import decode, pack_values, unpack
from .grid import Grid

__all__ = ["save", "save_with_grids", "load", "write_safetensors", "read_safetensors", "float_size"]

FORMAT = "qtrain-export-v1"
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_NAMES = {v: k for k, v in _DTYPES.items()}


def write_safetensors(path: Union[str, Path], tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> int:
    """Write ``tensors`` (CPU, any of the dtypes above) and string ``metadata``; returns the file size."""
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}; safetensors export supports {', '.join(map(str, _DTYPES))}")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((-len(head)) % 8)

    def parts():  # tensor by tensor, from the tensors' own memory (a copy only of non-contiguous ones)
        yield struct.pack("<Q", len(head)) + head
        for t in tensors.values():
            if t.numel():
                yield t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()

    atomic_write_bytes(path, parts())
    return 8 + len(head) + offset


def read_safetensors(path: Union[str, Path]):
    """``(tensors, metadata)`` from a safetensors file; one-line errors when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no export at {path}; write one with `qtrain export RUN --out {path.name}`")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:  # tensor by tensor: the file is never held twice
            (n,) = struct.unpack("<Q", f.read(8))
            if 8 + n > size:
                raise ValueError("bad header")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("bad header")
            meta = header.pop("__metadata__", {}) or {}
            base, out = 8 + n, {}
            for name, h in header.items():
                b, e = h["data_offsets"]
                if not 0 <= b <= e <= size - base:
                    raise ValueError(f"offsets of {name} out of range")
                dt = _NAMES[h["dtype"]]
                raw = torch.empty(e - b, dtype=torch.uint8)
                f.seek(base + b)
                if e > b and f.readinto(raw.numpy()) != e - b:
                    raise ValueError(f"{name} is truncated")
                out[name] = raw.view(dt).reshape(h["shape"]) if e > b else torch.zeros(h["shape"], dtype=dt)
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({str(e)[:80]}); re-export it") from None
    return out, meta


def _quantized(model: nn.Module, optimizer) -> Dict[str, Grid]:
    """state_dict name -> grid of every tensor ``optimizer`` keeps on a grid (none for method float)."""
    if optimizer is None or getattr(optimizer, "method", "float") == "float":
        return {}
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for name, p, g in zip(optimizer.names, optimizer.qparams, optimizer.grids):
        if id(p) not in by_id:
            raise ValueError(f"quantized tensor {name!r} is not a parameter of this model; pass the model the optimizer trains")
        out[by_id[id(p)]] = g
    return out


def save(model: nn.Module, optimizer=None, path: Union[str, Path] = "model.safetensors") -> dict:
    """Export ``model``'s ``state_dict``: tensors quantized by ``optimizer`` (a
    :class:`~qtrain.QuantizedOptimizer`) bit-packed, the rest as they are.

    Returns ``{"path", "bytes", "packed_bytes", "float_bytes", "header_bytes", "quantized", "tensors"}``.
    Raises ``ValueError`` if a quantized tensor holds values off its grid.
    """
    return save_with_grids(model, _quantized(model, optimizer), path)


def save_with_grids(model: nn.Module, grids: Dict[str, Grid], path: Union[str, Path]) -> dict:
    """:func:`save` with the quantized tensors given as ``{state_dict name: Grid}``."""
    missing = sorted(set(grids) - set(model.state_dict()))
    if missing:
        raise ValueError(f"quantized tensor(s) {', '.join(missing)} are not in the model's state_dict")
    tensors, meta = {}, {"format": FORMAT}
    packed = plain = 0
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if name in grids:
            g = grids[name]
            data, info = pack_values(t, g)  # chunk by chunk; float64 tensors: their float64 levels
            tensors[name] = data
            meta[f"qtrain.{name}"] = json.dumps({"grid": g.to_dict(), "shape": list(t.shape), "dtype": str(t.dtype),
                                                 **info})
            packed += data.numel()
        else:
            tensors[name] = t
            plain += t.numel() * t.element_size()
    size = write_safetensors(path, tensors, meta)
    return {"path": str(path), "bytes": size, "packed_bytes": packed, "float_bytes": plain,
            "header_bytes": size - packed - plain, "quantized": len(grids), "tensors": len(tensors)}


def load(model: nn.Module, path: Union[str, Path], strict: bool = True) -> dict:
    """Load an export into ``model`` (decoding packed tensors to their exact values); returns
    the file's metadata with each quantized tensor's entry parsed (``{"grid": Grid, ...}``)."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qtrain export (format {meta.get('format')!r}); write it with qtrain.export.save")
    state, info = {}, {}
    for name, t in tensors.items():
        q = meta.get(f"qtrain.{name}")
        if q is None:
            state[name] = t
            continue
        q = json.loads(q)
        g = Grid.from_dict(q["grid"])
        n = math.prod(q["shape"])
        dtype = getattr(torch, q.get("dtype", "torch.float32").replace("torch.", ""))
        state[name] = decode(unpack(t.reshape(-1), n, q, g), g, dtype).reshape(q["shape"])
        info[name] = {**q, "grid": g}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this model ({str(e).splitlines()[0][:120]}); build the model the run used") from None
    return info


def float_size(model: nn.Module) -> int:
    """Bytes of the same safetensors file with every tensor stored as it is (float32 weights):
    the baseline the packed export is compared with."""
    header: dict = {"__metadata__": {"format": FORMAT}}
    offset = 0
    for name, t in model.state_dict().items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + head + (-head) % 8 + offset
