r"""Small models for the quick scale: ``SmallCNN`` and ``MLP``.

**SmallCNN**: three blocks ``conv3×3(bias=False) + BN + ReLU + maxpool 2×2`` with widths
:math:`(w, 2w, 4w)`, then global average pooling and a linear layer to :math:`K` classes. The
max-pool is skipped once the feature map is 1×1, so it works from 8×8 digits (8→4→2→1) to
32×32 CIFAR (32→16→8→4). Its three convs are what a quantized optimizer quantizes. Default
:math:`w = 24` (53,794 parameters for 10 classes): one CIFAR-10 epoch (forward + backward +
Adam, batch 128) takes roughly 20–35 s on 2 CPU cores.

**MLP**: flatten, ``Linear(C·s·s, hidden)`` + ReLU, ``Linear(hidden, K)`` (no conv, so the
paper's conv-only quantization leaves it float; here for completeness).

>>> import torch
>>> from qtrain.models.small import SmallCNN, MLP
>>> SmallCNN(10, in_channels=1, image_size=8)(torch.zeros(4, 1, 8, 8)).shape
torch.Size([4, 10])
>>> MLP(10, in_channels=1, image_size=8)(torch.zeros(4, 1, 8, 8)).shape
torch.Size([4, 10])
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

__all__ = ["SmallCNN", "MLP"]


class SmallCNN(nn.Module):
    """3 × (conv3×3 + BN + ReLU + maxpool) with widths (w, 2w, 4w), global avg-pool, linear.

    Args:
        num_classes: :math:`K`.
        in_channels: input channels :math:`C`.
        image_size: input side :math:`s` (decides where pooling stops).
        width: :math:`w`, channels of the first block.

    Shape: :math:`N \\times C \\times s \\times s \\to N \\times K`.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: int = 24):
        super().__init__()
        layers: List[nn.Module] = []
        c, s = in_channels, image_size
        for mult in (1, 2, 4):
            layers += [nn.Conv2d(c, width * mult, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.ReLU(inplace=True)]
            if s >= 2:
                layers.append(nn.MaxPool2d(2))
                s //= 2
            c = width * mult
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    """Flatten + Linear(C·s·s → hidden) + ReLU + Linear(hidden → K).

    Args:
        num_classes: :math:`K`.
        in_channels: :math:`C`.
        image_size: :math:`s`.
        hidden: hidden units (256).

    Shape: :math:`N \\times C \\times s \\times s \\to N \\times K`.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(),
                                 nn.Linear(in_channels * image_size * image_size, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
