"""Build and load the fast CPU rounding kernel (``csrc/quantize.c``) with the system C compiler.

The kernel is optional: without a compiler (or with ``QTRAIN_NO_KERNEL=1``) qtrain uses the
``torch.compile``'d path (``qtrain._compiled``), else the eager torch path; all compute the same
bits. The kernel may round in place (``out`` = ``x``). :func:`compile_library` (also used by
:mod:`qtrain.theory._chain`) caches shared libraries under ``$QTRAIN_CACHE`` (default
``~/.cache/qtrain``), keyed by the source, the compiler flags and the host, and writes them
atomically so concurrent processes never load a half-written file.
Threads: the array is cut into one slice per torch thread; ctypes releases the GIL, and the
counter-based random source makes the result independent of the split.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

import torch

_SRC = Path(__file__).with_name("csrc") / "quantize.c"


def compiler_flags(machine: Optional[str] = None) -> List[str]:
    """The kernels' C flags on ``machine`` (default: this one). On x86-64 the vectors are 512 bits
    wide where the CPU has AVX-512 (measured faster here); gcc refuses that option elsewhere."""
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
             "-Wno-unknown-pragmas", "-fPIC", "-shared"]
    if (machine or platform.machine()).lower() in ("x86_64", "amd64"):
        flags.insert(2, "-mprefer-vector-width=512")
    return flags


_FLAGS = compiler_flags()
_pool: Optional[ThreadPoolExecutor] = None
_MIN_PER_THREAD = 1 << 16


def compile_library(name: str, source: str, flags: List[str]) -> Optional[ctypes.CDLL]:
    """Compile C ``source`` with the system compiler into ``$QTRAIN_CACHE/<name>-<hash>.so`` (once;
    atomically) and load it. ``None`` (with a warning) when there is no compiler or the build
    fails, or when ``QTRAIN_NO_KERNEL`` is set: callers then use their pure-Python/torch path."""
    if os.environ.get("QTRAIN_NO_KERNEL"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    tag = hashlib.sha256((source + " ".join([cc] + flags) + platform.node()).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("QTRAIN_CACHE", Path.home() / ".cache" / "qtrain"))
    lib_path = cache / f"{name}-{tag}.so"
    if not lib_path.exists():
        src = tmp = None
        try:
            cache.mkdir(parents=True, exist_ok=True)
            fd, src = tempfile.mkstemp(suffix=".c", dir=cache)
            with os.fdopen(fd, "w") as fh:
                fh.write(source)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
            os.close(fd)
            subprocess.run([cc, *flags, src, "-o", tmp, "-lm"], check=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            os.replace(tmp, lib_path)
        except (OSError, subprocess.SubprocessError) as e:
            warnings.warn(f"qtrain: could not build {name} ({e}); using the slower pure torch/Python path")
            return None
        finally:
            for leftover in (src, tmp):
                if leftover and os.path.exists(leftover):
                    os.unlink(leftover)
    try:
        return ctypes.CDLL(str(lib_path))
    except OSError as e:  # a corrupt or foreign cached file: fall back rather than fail every call
        warnings.warn(f"qtrain: could not load {lib_path} ({e}); delete it to rebuild. Using the slower path")
        return None


def _build() -> Optional[ctypes.CDLL]:
    if not _SRC.exists():
        return None
    lib = compile_library("quantize", _SRC.read_text(), _FLAGS)
    if lib is None or not hasattr(lib, "qtrain_quantize_f32"):
        return None
    f = lib.qtrain_quantize_f32
    f.restype = ctypes.c_int64
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                  ctypes.c_float, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                  ctypes.c_uint32, ctypes.c_uint32]
    return lib


#: One packed record of ``csrc/quantize.c``'s ``qtrain_rec`` (80 bytes): x, out, latent pointers,
#: n, mode, flags (1 bounded, 2 clamp into latent, 4 key from the step head), key (or index),
#: delta, scale, kmin, kmax, clamp lo, hi, and the bad count the kernel writes back.
REC = struct.Struct("=qqqqiiQffffffq")
BAD_OFFSET = REC.size - 8


@functools.lru_cache(maxsize=None)
def rec_fns():
    """``(one, many)``: the record entries, called with no ``argtypes`` (ctypes' per-argument
    conversion costs ~0.25 µs an argument; a record is one pointer): ``one(bytes) -> bad`` and
    ``many(address, count, head) -> bad``; ``None`` without the kernel."""
    lib = get()
    if lib is None or not hasattr(lib, "qtrain_quantize_recs"):
        return None
    one, many = lib.qtrain_quantize_rec, lib.qtrain_quantize_recs
    one.restype = many.restype = ctypes.c_int64
    many.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64]
    return one, many


@functools.lru_cache(maxsize=None)
def nonfinite_fn():
    """``f(bytes of (pointer, length) int64 pairs, c_int64(count)) -> 1`` if any of those float32
    arrays holds NaN or inf, else ``0``; ``None`` without the kernel."""
    lib = get()
    if lib is None or not hasattr(lib, "qtrain_nonfinite_f32"):
        return None
    f = lib.qtrain_nonfinite_f32
    f.restype = ctypes.c_int64
    return f


@functools.lru_cache(maxsize=None)
def get() -> Optional[ctypes.CDLL]:
    """The loaded kernel library (built on first use), or ``None`` when it is unavailable."""
    return _build()


_fn = None  # the bound C function, once built


def run(x: torch.Tensor, out: torch.Tensor, mode: int, delta: float, bounded: bool, kmin: float,
        kmax: float, scale: float, key: int, start: int = 0) -> int:
    """Quantize contiguous float32 CPU ``x`` into contiguous ``out`` (which may be ``x`` itself:
    in place); returns non-zero when an entry has no finite level (see ``csrc/quantize.c``).
    ``start``: ``x`` is elements ``[start, start + n)`` of a larger tensor (their random draws)."""
    global _pool, _fn
    if _fn is None:
        lib = get()
        assert lib is not None
        _fn = lib.qtrain_quantize_f32
    n = x.numel()
    k0, k1 = key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF
    if n < 2 * _MIN_PER_THREAD:  # small tensors: one direct call, no thread pool (fixed cost ~2 µs)
        return _fn(x.data_ptr(), out.data_ptr(), n, start, mode, delta, bounded, kmin, kmax, scale, k0, k1)
    xp, op = x.data_ptr(), out.data_ptr()
    args = (mode, delta, int(bounded), kmin, kmax, scale, k0, k1)
    nthreads = max(1, min(torch.get_num_threads(), n // _MIN_PER_THREAD))
    if nthreads == 1:
        return int(_fn(xp, op, n, start, *args))
    if _pool is None or _pool._max_workers < nthreads:  # noqa: SLF001
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="qtrain-kernel")
    bounds = [n * j // nthreads for j in range(nthreads + 1)]
    futures = [_pool.submit(_fn, xp + 4 * a, op + 4 * a, b - a, start + a, *args)
               for a, b in zip(bounds[:-1], bounds[1:])]
    return sum(int(f.result()) for f in futures)
