r"""VGG-9 and VGG-BC (the BinaryConnect net), as defined in the paper's Table 1 protocol.

Notation: ``64C3`` = 3×3 convolution to 64 channels (stride 1, pad 1, ``bias=False``) followed
by BatchNorm and ReLU; ``M`` = 2×2 max-pool; ``256FC`` = linear layer to 256 units.

* **VGG-9**: ``64C3-64C3-M-128C3-128C3-M-256C3-256C3-256C3-M-256FC-K`` (7 conv + 2 FC). The
  hidden FC is followed by BN + ReLU; on 32×32 inputs it sees :math:`256 \cdot 4 \cdot 4 = 4096`
  features.
* **VGG-BC** (Courbariaux et al., 2015): ``(2×128C3)-M-(2×256C3)-M-(2×512C3)-M-(2×1024FC)-K``
  with BN after every conv and FC, **including the output layer** (**[choice]**, as in the
  BinaryConnect code; the final BN is affine so it can rescale the logits).

**[choice]** A linear layer followed by BN has no bias (BN's shift makes it redundant, as for
the convolutions); the plain output layer of VGG-9 keeps its bias. Weights use PyTorch's
default initialisation.

For inputs other than 32×32 the flattened width is :math:`c \cdot \lfloor s/8 \rfloor^2`.

>>> import torch
>>> from qtrain.models.vgg import VGG9
>>> net = VGG9(num_classes=10)
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> sum(p.numel() for p in net.parameters())
2788298
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import nn

__all__ = ["VGG9", "VGGBC", "make_features", "VGG9_CFG", "VGGBC_CFG"]

VGG9_CFG: Sequence[Union[int, str]] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
VGGBC_CFG: Sequence[Union[int, str]] = (128, 128, "M", 256, 256, "M", 512, 512, "M")


def make_features(cfg: Sequence[Union[int, str]], in_channels: int) -> nn.Sequential:
    """Conv3×3(bias=False)+BN+ReLU for each int in ``cfg``, 2×2 max-pool for each ``"M"``."""
    layers: List[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                       nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


def _flat_size(cfg: Sequence[Union[int, str]], image_size: int) -> int:
    s, c = image_size, 0
    for v in cfg:
        if v == "M":
            s //= 2
        else:
            c = int(v)
    if s < 1:
        raise ValueError(f"image_size {image_size} is too small for {cfg.count('M')} max-pools")
    return c * s * s


class VGG9(nn.Module):
    """VGG-9: 7 conv (64, 64, 128, 128, 256, 256, 256) + FC 4096→256 (BN, ReLU) + FC→K.

    Args:
        num_classes: :math:`K`.
        in_channels: input channels (3 for CIFAR).
        image_size: input side :math:`s` (32 for CIFAR).
        hidden: width of the hidden FC layer (256).

    Shape: :math:`N \\times C \\times s \\times s \\to N \\times K`.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 hidden: int = 256):
        super().__init__()
        self.features = make_features(VGG9_CFG, in_channels)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(VGG9_CFG, image_size), hidden, bias=False),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGGBC(nn.Module):
    """VGG-BC: (2×128C3)-M-(2×256C3)-M-(2×512C3)-M-(2×1024FC)-K, BN after every layer.

    Args:
        num_classes: :math:`K`.
        in_channels: input channels (3 for CIFAR).
        image_size: input side :math:`s` (32 → 512·4·4 = 8192 features into the first FC).
        hidden: width of the two hidden FC layers (1024).

    Shape: :math:`N \\times C \\times s \\times s \\to N \\times K`.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 hidden: int = 1024):
        super().__init__()
        self.features = make_features(VGGBC_CFG, in_channels)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(VGGBC_CFG, image_size), hidden, bias=False),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes, bias=False), nn.BatchNorm1d(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
