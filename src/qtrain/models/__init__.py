r"""The networks of the paper's experiments, plus small ones for quick runs.

======== ============================================ =============================
name     architecture                                 params (10 classes, 32×32)
======== ============================================ =============================
vgg9     7 conv + 2 FC (paper Table 1)                2,788,298
vggbc    BinaryConnect VGG (6 conv + 3 FC)            14,029,716
resnet20 CIFAR ResNet, n=3, widths 16/32/64, opt. A   269,722
resnet56 CIFAR ResNet, n=9, widths 16/32/64, opt. A   853,018
wrn56_2  ResNet-56 with widths 32/64/128              3,401,770
resnet18 ImageNet ResNet-18 (7×7 stem, [2,2,2,2])     11,181,642
smallcnn 3×(conv+BN+ReLU+pool), widths 24/48/96       53,794
mlp      flatten + 2 linear (hidden 256)              789,258
gpt-tiny char GPT: 4 layers, 4 heads, width 128   813,568 (65 characters)
======== ============================================ =============================

``gpt-tiny`` is a language model (:mod:`qtrain.models.gpt`): ``num_classes`` is the vocabulary
size, ``block_size`` (default 64) its context; ``in_channels`` and ``image_size`` are unused.

All are plain PyTorch modules (no quantization inside): a quantized optimizer decides which
weights to quantize (the paper: the conv weights). Convolutions have ``bias=False``.

>>> import torch
>>> from qtrain.models import MODELS, build
>>> net = build("resnet20", num_classes=100)
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 100])
>>> build("smallcnn", 10, in_channels=1, image_size=8)(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from .gpt import GPT
from .resnet import CifarResNet, ResNet18, cifar_resnet
from .small import MLP, SmallCNN
from .vgg import VGG9, VGGBC

__all__ = ["MODELS", "build", "num_parameters", "VGG9", "VGGBC", "CifarResNet", "ResNet18",
           "SmallCNN", "MLP", "cifar_resnet", "GPT", "LM_MODELS"]

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "vgg9": lambda k, c, s, **kw: VGG9(k, c, s, **kw),
    "vggbc": lambda k, c, s, **kw: VGGBC(k, c, s, **kw),
    "resnet20": lambda k, c, s, **kw: CifarResNet(3, (16, 32, 64), k, c, **kw),
    "resnet56": lambda k, c, s, **kw: CifarResNet(9, (16, 32, 64), k, c, **kw),
    "wrn56_2": lambda k, c, s, **kw: CifarResNet(9, (32, 64, 128), k, c, **kw),
    "resnet18": lambda k, c, s, **kw: ResNet18(k, c, **kw),
    "smallcnn": lambda k, c, s, **kw: SmallCNN(k, c, s, **kw),
    "mlp": lambda k, c, s, **kw: MLP(k, c, s, **kw),
}
MODELS = tuple(_BUILDERS)  # image classifiers
_BUILDERS["gpt-tiny"] = lambda k, c, s, **kw: GPT(k, **kw)
LM_MODELS = ("gpt-tiny",)  # language models: token ids in, next-token logits out


def build(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
          **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes and ``in_channels``×``image_size``² inputs.

    Extra keyword arguments go to the model's constructor (e.g. ``width`` for ``smallcnn``,
    ``hidden`` for ``mlp``/``vgg9``/``vggbc``).

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`MODELS` and :data:`LM_MODELS`) or bad sizes.
    """
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS + LM_MODELS)}") from None
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(f"num_classes, in_channels and image_size must be positive, got "
                         f"{num_classes}, {in_channels}, {image_size}")
    return builder(num_classes, in_channels, image_size, **kwargs)


def num_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
