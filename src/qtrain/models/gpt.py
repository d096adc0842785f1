r"""A small GPT for character-level language modelling (``gpt-tiny``).

Decoder-only transformer, pre-norm: token and learned position embeddings, ``n_layer``
blocks, a final LayerNorm and a linear head to the vocabulary. Each block is

.. math::
    h \leftarrow h + W_o\,\mathrm{Attn}(W_{qkv}\,\mathrm{LN}_1(h)), \qquad
    h \leftarrow h + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2(h)),

with causal multi-head attention :math:`\mathrm{softmax}(q k^\top / \sqrt{d_h} + M) v`
(:math:`M` masks the future, :math:`d_h` = width / heads) and an MLP of 4 × width. The block
linears have no bias, so "the Linear weights of the blocks" (:meth:`GPT.block_weights`) are
all of the blocks' matrices: what BitNet quantizes, and what qtrain quantizes by default for
this model (embeddings, norms and the head stay float). Defaults: 4 layers, 4 heads, width
128, context 64: 813,568 parameters for a 65-character vocabulary, 786,432 of them in the
blocks' linears. Initialisation: N(0, 0.02) for linears and embeddings, the residual output
projections scaled by :math:`1/\sqrt{2 L}` (GPT-2). Logits are returned in float32 whatever
the weights' dtype, so the loss is computed in float32.

>>> import torch
>>> net = GPT(65)
>>> net(torch.zeros(2, 64, dtype=torch.long)).shape
torch.Size([2, 64, 65])
>>> sum(p.numel() for p in net.parameters()), sum(p.numel() for _, p in net.block_weights())
(813568, 786432)
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GPT", "Block", "CausalSelfAttention"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused q/k/v projection, one output projection."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        if width % n_head:
            raise ValueError(f"width={width} must be a multiple of n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm transformer block: attention and a 4× GELU MLP, each with a residual connection."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, n_head)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.out = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Character-level GPT.

    Args:
        vocab_size: number of distinct characters :math:`|V|`.
        block_size: longest context :math:`T` (position embeddings).
        n_layer, n_head, width: depth, heads and model width.

    Shape: ``int64`` :math:`B \\times t` (:math:`t \\le T`) :math:`\\to` float32 logits :math:`B \\times t \\times |V|`.
    """

    def __init__(self, vocab_size: int, block_size: int = 64, n_layer: int = 4, n_head: int = 4, width: int = 128):
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                        ("n_head", n_head), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(block_size, width)
        self.blocks = nn.ModuleList(Block(width, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self._init(n_layer)

    def _init(self, n_layer: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        for block in self.blocks:
            for lin in (block.attn.proj, block.out):
                nn.init.normal_(lin.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def block_weights(self) -> List[Tuple[str, nn.Parameter]]:
        """``(name, weight)`` of every ``nn.Linear`` inside the transformer blocks, in order."""
        return [(f"blocks.{name}.weight", m.weight) for name, m in self.blocks.named_modules()
                if isinstance(m, nn.Linear)]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of length {t} is longer than the model's context block_size={self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)).float()
