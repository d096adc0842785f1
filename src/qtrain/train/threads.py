r"""The torch thread count of a CPU run whose config leaves ``threads`` unset.

Intra-op threads pay off only when every operator has enough work to split: on small models
the per-operator hand-off costs more than it saves, and on a busy machine extra threads
mostly wait for each other (the mini model, ``smallcnn`` width 16 at batch 128 on CIFAR-10:
2.2 GFLOP per step, trains several times faster with one thread than with two on a loaded
2-core machine; see the README). The rule [choice]:

.. math:: \text{threads} = \min\!\bigl(\text{cores},\ \max(1, \lfloor F / F_1 \rfloor)\bigr),
   \qquad F = 6 \cdot \text{MACs per example} \cdot \text{batch per process}

with :math:`F` the training FLOPs of one step (forward 2 per MAC, backward twice that),
counted over the model's ``Conv``/``Linear`` layers on one example, :math:`F_1` =
:data:`FLOP_PER_THREAD`, and ``cores`` the cores this process may use divided among the
processes of a ``torchrun`` job on this machine (a lone process: at most ``OMP_NUM_THREADS``
where set). It depends on the model, the batch, the machine's core count and that variable only
(not on the load), so the same command on the same machine picks the same number; the number
is written into ``config.json``, so a resumed run keeps it.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

FLOP_PER_THREAD = 10e9  # training FLOPs per step that justify one more thread [choice]


def cores() -> int:
    """Cores this process may run on, shared among the local processes of a torchrun job; for a
    single process, at most ``OMP_NUM_THREADS`` when that is a positive integer (as torch's own
    default honours it). Under torchrun with several local processes the variable is ignored:
    torchrun sets it to 1 itself unless told otherwise, and the share already divides the cores."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if local > 1:
        return max(1, n // local)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(n, int(omp)) if omp.isdigit() and int(omp) > 0 else n


@torch.no_grad()
def macs_per_example(model: nn.Module, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Multiply-accumulates of one forward pass over ``Conv``/``Linear`` layers, for one example
    of ``shape`` (C, H, W); measured with hooks on a zero input in eval mode (no state changes),
    through the class's ``forward`` so wrappers set on the instance see no extra call."""
    total = 0

    def hook(m, _inputs, out):
        nonlocal total
        if isinstance(m, nn.modules.conv._ConvNd):
            total += out.numel() * (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    was_training = model.training
    device = next(model.parameters()).device
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model.eval()
        type(model).forward(model, torch.zeros(1, *shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def pick_threads(model: nn.Module, shape: Sequence[int], batch_per_process: int,
                 dtype: torch.dtype = torch.float32) -> int:
    """The rule above for ``model`` on examples of ``shape`` (and ``dtype``: ``torch.long`` token
    ids for a language model) at ``batch_per_process``."""
    flops = 6 * macs_per_example(model, shape, dtype) * batch_per_process
    return min(cores(), max(1, int(flops // FLOP_PER_THREAD)))
