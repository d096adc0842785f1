r"""Residual networks: CIFAR ResNet-20/56, WRN-56-2, and the ImageNet ResNet-18.

**CIFAR ResNet** (He et al., 2016, §4.2): a 3×3 stem conv to :math:`w_1` channels, three
stages of :math:`n` basic blocks with widths :math:`(w_1, w_2, w_3)` at resolutions
32, 16, 8, global average pooling and one linear layer; depth :math:`6n + 2`.
ResNet-20: :math:`n=3`; ResNet-56: :math:`n=9`; widths 16/32/64. WRN-56-2 is ResNet-56 with
widths 32/64/128 (stem included) — the paper's "same with widths 32/64/128" (**[choice]**:
post-activation basic blocks as in ResNet-56, not WRN's pre-activation ones).

A basic block computes :math:`\mathrm{relu}(\mathrm{bn}(\mathrm{conv}(\mathrm{relu}(
\mathrm{bn}(\mathrm{conv}(x))))) + s(x))`.

**[choice] Shortcut: option A** (He et al.'s CIFAR choice): when a block halves the
resolution and widens the channels, :math:`s(x)` subsamples :math:`x[:, :, ::2, ::2]` and
zero-pads the new channels (half before, half after). It has no parameters, so every weight of
the CIFAR ResNets is in a conv, the stem, a BN or the final linear layer.

**ResNet-18** (ImageNet): 7×7/2 stem conv to 64, BN, ReLU, 3×3/2 max-pool, four stages of two
basic blocks (64, 128, 256, 512; stride 2 from the second stage on), with the standard 1×1
conv + BN projection shortcut where the shape changes (option B), global average pooling,
linear layer. Zero-init of the last BN is *not* used (plain He et al. recipe). All
convolutions have ``bias=False``.

>>> import torch
>>> from qtrain.models.resnet import cifar_resnet
>>> net = cifar_resnet(depth=20, num_classes=10)
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> sum(p.numel() for p in net.parameters())
269722
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet", "ResNet18", "ImageNetBlock"]


def _init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convs; BN weight 1, bias 0 (He et al.)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """CIFAR basic block with the parameter-free option-A shortcut.

    Shape: :math:`N \\times C_{in} \\times H \\times W \\to
    N \\times C_{out} \\times H/s \\times W/s`.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra = planes - in_planes
        if self.extra < 0:
            raise ValueError("option-A shortcut cannot reduce the number of channels")

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            before = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, before, self.extra - before))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """CIFAR ResNet with ``blocks_per_stage`` basic blocks per stage and the given widths.

    Args:
        blocks_per_stage: :math:`n` (depth :math:`6n+2`).
        widths: the three stage widths (16, 32, 64) for ResNet; (32, 64, 128) for WRN-56-2.
        num_classes: :math:`K`.
        in_channels: input channels.

    Shape: :math:`N \\times C \\times s \\times s \\to N \\times K` (any :math:`s \\geq 4`).
    """

    def __init__(self, blocks_per_stage: int, widths: Sequence[int] = (16, 32, 64),
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        w = list(widths)
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        layers: List[nn.Module] = []
        in_planes = w[0]
        for i, planes in enumerate(w):
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def cifar_resnet(depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 width: int = 1) -> CifarResNet:
    """CIFAR ResNet of depth :math:`6n+2` and widths :math:`(16, 32, 64) \\cdot` ``width``."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, [16 * width, 32 * width, 64 * width], num_classes,
                       in_channels)


class ImageNetBlock(nn.Module):
    """ImageNet basic block with a 1×1 conv + BN projection when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class ResNet18(nn.Module):
    """The standard ImageNet ResNet-18 (11,689,512 parameters for 1000 classes).

    Args:
        num_classes: :math:`K`.
        in_channels: input channels (3).

    Shape: :math:`N \\times C \\times 224 \\times 224 \\to N \\times K` (any size
    :math:`\\geq 32` works thanks to global average pooling).
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: List[nn.Module] = []
        in_planes = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(ImageNetBlock(in_planes, planes, stride),
                                        ImageNetBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
