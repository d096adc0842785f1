"""What a run trains: which tensors are quantized, the base optimizer and its parameter groups."""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn

from ..optim import named_conv_weights
from .config import TrainConfig

__all__ = ["quantized_params", "make_base_optimizer", "glorot_lr_scale", "param_groups"]


def quantized_params(model: nn.Module, which: str) -> List[Tuple[str, nn.Parameter]]:
    """The tensors a run quantizes: conv weights (the paper), every weight with ndim > 1 (``all``), the Linear
    weights of a transformer's blocks (``blocks``, BitNet) or every parameter (``every``)."""
    if which == "conv":
        return named_conv_weights(model)
    if which == "blocks":
        if not hasattr(model, "block_weights"):
            raise ValueError(f"quantize='blocks' needs a transformer (gpt-tiny), not {type(model).__name__}; "
                             "use --quantize conv or all")
        return model.block_weights()
    return [(n, p) for n, p in model.named_parameters() if p.ndim > 1 or which == "every"]


def make_base_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "torchao-sr-adamw":  # optional: torchao's AdamW that stores bf16 weights with stochastic rounding
        try:
            from torchao.optim import _AdamW
        except Exception as e:  # ImportError, or a torchao built for another torch
            raise ValueError(f"optimizer='torchao-sr-adamw' needs torchao ({type(e).__name__}: {str(e)[:80]}); "
                             "pip install torchao, or use --optimizer adamw") from None
        return _AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, bf16_stochastic_round=True)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def glorot_lr_scale(p: torch.Tensor) -> float:
    r"""BinaryConnect's per-layer learning-rate factor :math:`1/\sqrt{1.5/(\text{fan}_{in}+\text{fan}_{out})}`
    (the inverse of the Glorot-uniform bound), for a weight of shape (out, in, *kernel)."""
    receptive = p[0, 0].numel() if p.ndim > 2 else 1
    return 1.0 / math.sqrt(1.5 / (p.shape[1] * receptive + p.shape[0] * receptive))


def param_groups(model: nn.Module, named_q, cfg: TrainConfig) -> list:
    """One group for everything, or with ``lr_scale='glorot'`` one group per quantized tensor at its scaled lr."""
    if cfg.lr_scale == "none":
        return [{"params": list(model.parameters())}]
    qids = {id(p) for _, p in named_q}
    groups = [{"params": [p for p in model.parameters() if id(p) not in qids]}]
    return groups + [{"params": [p], "lr": cfg.lr * glorot_lr_scale(p)} for _, p in named_q]
