r"""Dynamic grids: a grid whose scale is recomputed from the weights at every step (BitNet-style).

A :class:`~qtrain.Grid` is fixed; a :class:`DynamicGrid` is a *rule* that turns the tensor
being rounded into a grid. :class:`qtrain.QuantizedOptimizer` accepts one wherever it accepts
a grid (the ``grid`` argument, or a value of a ``{name: grid}`` dict) and, at every step,
after the base step and before the rounding, evaluates the rule on the tensor about to be
rounded: BC's latent weights :math:`w_r^{t+1} = w_r^t + s_t`, or for R/SR the updated weights
:math:`w_b^t + s_t`. With a statistic :math:`\sigma(w)` of the :math:`n` entries,

.. math::
    \mathrm{absmean}(w) = \frac1n \sum_j |w_j|, \qquad \mathrm{absmax}(w) = \max_j |w_j|,

the rules are

============  =========================================================  ==========================
kind          grid at step :math:`t`                                     source
============  =========================================================  ==========================
ternary       :math:`\{-s, 0, s\}`, :math:`s = \sigma(w)`                 BitNet b1.58 (absmean)
binary        :math:`\{-s, s\}`, :math:`s = \sigma(w)`                     XNOR-Net's :math:`\alpha` (absmean)
uniform b     absmax: :math:`\Delta = \sigma(w) / (2^{b-1} - 1)`           symmetric absmax
              absmean: :math:`\Delta = 2\sigma(w) / \sqrt{2^{b-1} - 1}`     LSQ's initial step
============  =========================================================  ==========================

so the poster's :math:`Q_d` on the ternary grid is BitNet's
:math:`\mathrm{RoundClip}(w/s, -1, 1)\cdot s` (ties away from zero). The scale has a floor of
``1e-12`` (an all-zero tensor) **[choice]**; for float16/bfloat16 parameters the scale of a
binary/ternary grid is rounded to that dtype and a uniform :math:`\Delta` down to a power of
two, so every level is stored exactly **[choice]**.

BC's latent weights are not clipped to the current grid (``clip=None``, BitNet's choice), so a
scale computed from them can grow as well as shrink; ``clip=c`` clips them to :math:`c` times
the current grid's range (``clip=1`` is BinaryConnect's clip at the current scale). For R and
SR the statistic of values already on a grid shrinks (e.g. absmean of ternary weights is
:math:`s` times the fraction that are non-zero): dynamic grids are meant for BC.

The statistic is a deterministic reduction of the weights, so the grids follow from the
saved weights and BC latents: a resumed run recomputes the same grids (same torch thread
count). ``state_dict`` stores the rules and the current grids.

>>> import torch
>>> from qtrain.dynamic import DynamicGrid
>>> w = torch.tensor([0.3, -0.1, 0.2, -0.4])
>>> DynamicGrid.ternary()(w)  # s = mean |w|
Grid.ternary(0.25)
>>> DynamicGrid.uniform(4, "absmax")(w).delta * 7  # Δ = max|w| / (2^3 - 1), float32 max
0.4000000059604645
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .grid import Grid

__all__ = ["DynamicGrid", "STATS"]

STATS = ("absmean", "absmax")
_KINDS = ("ternary", "binary", "uniform")
_FLOOR = 1e-12
_LOW = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DynamicGrid:
    """A rule ``weights -> Grid`` evaluated at every optimizer step (see the module docstring).

    Attributes:
        kind: ``"ternary"``, ``"binary"`` or ``"uniform"``.
        stat: ``"absmean"`` or ``"absmax"``.
        bits: the bit width of a uniform grid (2..16); ``None`` otherwise.
        clip: BC only: clip the latent weights to ``clip`` times the current grid's range;
            ``None`` (default): not clipped.
    """

    kind: str
    stat: str = "absmean"
    bits: Optional[int] = None
    clip: Optional[float] = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"DynamicGrid kind={self.kind!r} is not one of {_KINDS}; use DynamicGrid.ternary() or .uniform(bits)")
        if self.stat not in STATS:
            raise ValueError(f"DynamicGrid stat={self.stat!r} is not one of {STATS}")
        if self.kind == "uniform":
            b = self.bits
            if type(b).__name__ in ("bool", "bool_") or not hasattr(b, "__index__") or not 2 <= b.__index__() <= 16:
                raise ValueError(f"DynamicGrid.uniform bits={b!r} must be an integer in 2..16")
            object.__setattr__(self, "bits", b.__index__())
        elif self.bits is not None:
            raise ValueError(f"bits={self.bits!r} applies to uniform dynamic grids only")
        if self.clip is not None:
            c = self.clip
            if isinstance(c, (str, bytes, bool)) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 1:
                raise ValueError(f"DynamicGrid clip={c!r} must be a number >= 1 (a multiple of the grid's range) or None")
            object.__setattr__(self, "clip", float(c))

    # -- constructors ---------------------------------------------------------------------
    @staticmethod
    def ternary(stat: str = "absmean", clip: Optional[float] = None) -> "DynamicGrid":
        r""":math:`\{-s, 0, s\}` with :math:`s = \sigma(w)` (absmean: BitNet b1.58)."""
        return DynamicGrid("ternary", stat, None, clip)

    @staticmethod
    def binary(stat: str = "absmean", clip: Optional[float] = None) -> "DynamicGrid":
        r""":math:`\{-s, s\}` with :math:`s = \sigma(w)`."""
        return DynamicGrid("binary", stat, None, clip)

    @staticmethod
    def uniform(bits: int, stat: str = "absmax", clip: Optional[float] = None) -> "DynamicGrid":
        r"""``bits``-bit uniform grid; :math:`\Delta` from absmax or absmean (module table)."""
        return DynamicGrid("uniform", stat, bits, clip)

    # -- evaluation -----------------------------------------------------------------------
    def statistic(self, w: torch.Tensor, name: str = "weights") -> float:
        r""":math:`\sigma(w)` as a Python float (one reduction pass, no full-size temporary)."""
        if w.numel() == 0:
            raise ValueError(f"{name} is empty: a dynamic grid needs at least one weight")
        w = w.detach()
        if self.stat == "absmean":
            v = float(torch.linalg.vector_norm(w, 1)) / w.numel()
        else:
            v = float(torch.linalg.vector_norm(w, math.inf))
        if not math.isfinite(v):
            raise ValueError(f"{name} hold NaN or inf ({self.stat} = {v}); lower the learning rate or check the loss")
        return v

    def grid(self, w: torch.Tensor, dtype: Optional[torch.dtype] = None, name: str = "weights") -> Grid:
        """The grid of this step for weights ``w``, whose levels ``dtype`` (default ``w.dtype``) holds."""
        dtype = w.dtype if dtype is None else dtype
        s = max(self.statistic(w, name), _FLOOR)
        if self.kind == "uniform":
            q = 2 ** (self.bits - 1) - 1
            d = s / q if self.stat == "absmax" else 2 * s / math.sqrt(q)
            if dtype in _LOW:
                d = 2.0 ** math.floor(math.log2(d))
            return Grid.uniform(d, self.bits)
        if dtype in _LOW:
            s = float(torch.tensor(s, dtype=torch.float32).to(dtype))
        return Grid.ternary(s) if self.kind == "ternary" else Grid.binary(s)

    def __call__(self, w: torch.Tensor) -> Grid:
        return self.grid(w)

    def clip_bounds(self, grid: Grid, dtype) -> Optional[tuple]:
        """``(low, high)`` BC clips its latents to under ``grid``, or ``None`` (not clipped)."""
        if self.clip is None:
            return None
        lo, hi = grid.bounds(dtype)
        return self.clip * lo, self.clip * hi

    # -- checkpoints ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": self.kind, "stat": self.stat, "bits": self.bits, "clip": self.clip}

    @staticmethod
    def from_dict(d: dict) -> "DynamicGrid":
        return DynamicGrid(d["kind"], d.get("stat", "absmean"), d.get("bits"), d.get("clip"))

    def __repr__(self) -> str:
        extra = f", clip={self.clip}" if self.clip is not None else ""
        if self.kind == "uniform":
            return f"DynamicGrid.uniform({self.bits}, {self.stat!r}{extra})"
        return f"DynamicGrid.{self.kind}({self.stat!r}{extra})"


def dynamic_specs(grid, names) -> dict:
    """``{index: DynamicGrid}`` for the quantized tensors whose ``grid`` argument is a rule."""
    if isinstance(grid, DynamicGrid):
        return {i: grid for i in range(len(names))}
    if isinstance(grid, dict) or hasattr(grid, "keys"):
        return {i: grid[n] for i, n in enumerate(names) if isinstance(grid[n], DynamicGrid)}
    return {}


def refresh(opt, sources, swapped) -> None:
    """Set ``opt.grids[i]`` for every dynamic tensor from ``sources[i]``, the values about to be
    rounded (the stored levels' dtype is the parameter's own, also while it holds float32 work)."""
    for i, spec in opt.dynamic.items():
        dtype = swapped[i][0].dtype if i in swapped else opt.qparams[i].dtype
        opt.grids[i] = spec.grid(sources[i], dtype, opt.names[i])


def clip_latent(spec: DynamicGrid, grid: Grid, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """BC: write :math:`w_r` (``x``, clipped at ``spec.clip`` times the range if set) into ``latent``."""
    b = spec.clip_bounds(grid, latent.dtype)
    if b is not None:
        return torch.clamp(x, *b, out=latent)
    return latent if x is latent else latent.copy_(x)
