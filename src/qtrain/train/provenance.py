"""Where a run ran: the record that says when two runs can agree bit for bit.

Same seed and settings give bit-identical weights and metrics on the same CPU model, CPU capability
(the instruction set torch's kernels dispatch to, e.g. ``AVX512`` or ``AVX2``), torch version,
thread count and data bytes. A run's ``config.json`` records all of them beside its settings:
``machine`` (this module) and ``data_sha256`` (:func:`qtrain.data.digest.data_sha256`). Another
capability changes the float summation kernels, hence the bits; so can another CPU model of the
same capability: an AMD EPYC and an Intel Xeon with AMX, both ``AVX512`` to torch 2.13.0, one
thread, same data, gave different losses in a CIFAR-10 run's first epoch (the kernel libraries
dispatch on finer CPU features than torch's capability string). A virtual machine may report a
generic model name ("Intel(R) Xeon(R) Processor"), so ``cpu_flags`` also records a digest of the
CPU's feature flags, which tells generations apart.

>>> sorted(machine())
['capability', 'cpu', 'cpu_flags', 'gpu', 'platform', 'threads', 'torch']
"""
from __future__ import annotations

import platform
from typing import Optional

import torch

PROVENANCE_KEYS = ("machine", "data_sha256", "earlier_machines")  # in config.json, not settings


def _cpuinfo(key: str) -> Optional[str]:
    """The value of the first ``/proc/cpuinfo`` line whose name is ``key``, or ``None`` (no such line,
    or not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip().lower() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` reports)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> Optional[str]:
    """The first 16 hex digits of the SHA-256 of the CPU's feature flags (``/proc/cpuinfo``'s ``flags``
    line, sorted), or ``None`` where there is no such line (not Linux, or not x86)."""
    import hashlib

    flags = _cpuinfo("flags")
    return None if flags is None else hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16]


def cpu_capability() -> Optional[str]:
    """``torch.backends.cpu.get_cpu_capability()`` (e.g. ``"AVX512"``), or ``None`` where torch lacks it."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def machine(device: Optional[torch.device] = None) -> dict:
    """CPU model, torch's CPU capability, torch version, torch threads, platform and GPU (if used)."""
    gpu = None
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "capability": cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "platform": platform.machine(), "gpu": gpu}


BITS_KEYS = ("cpu", "cpu_flags", "capability", "torch", "threads", "gpu")  # what must match for the same bits


def machine_differences(a: dict, b: dict) -> list:
    """The ``machine`` fields (of :data:`BITS_KEYS`) in which two records differ; ``cpu_flags`` only
    where both records have it (runs recorded before it existed lack it)."""
    return [k for k in BITS_KEYS if a.get(k) != b.get(k) and (k != "cpu_flags" or (a.get(k) and b.get(k)))]


def same_bits_expected(a: Optional[dict], b: Optional[dict]) -> Optional[bool]:
    """Whether two ``machine`` records promise the same bits (CPU model and flags, capability, torch,
    threads, GPU all equal); ``None`` when either is missing."""
    if not a or not b:
        return None
    return not machine_differences(a, b)


def config_record(settings: dict, previous_path, device: Optional[torch.device], ds) -> dict:
    """What a run's ``config.json`` holds: its settings, this ``machine`` and ``data_sha256``. A
    resumed run that finds another machine in the previous file keeps it under ``earlier_machines``."""
    import json

    from ..data.digest import data_sha256

    record = dict(settings, machine=machine(device), data_sha256=data_sha256(ds))
    try:
        before = json.loads(open(previous_path, "rb").read().decode("utf-8"))
    except (OSError, ValueError):
        before = None
    if isinstance(before, dict):
        earlier = [m for m in before.get("earlier_machines") or [] if isinstance(m, dict)]
        if isinstance(before.get("machine"), dict) and before["machine"] != record["machine"]:
            earlier.append(before["machine"])
        if earlier:
            record["earlier_machines"] = earlier
    return record
