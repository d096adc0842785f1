r"""Quantized training over any ``torch.optim`` optimizer: float, BC, R and SR.

Let :math:`s_t(w)` be the step the base optimizer (SGD, Adam, ...) would take from the
stochastic gradient :math:`\nabla\tilde f(w_b^t)` evaluated at the *quantized* weights
(for SGD, :math:`s_t = -\alpha_t\nabla\tilde f(w_b^t)`). The poster's methods are

=========  ==================================================  ========================
method     update                                               weights kept
=========  ==================================================  ========================
``float``  :math:`w^{t+1} = w^t + s_t`                          float (the base optimizer)
``r``      :math:`w_b^{t+1} = Q_d(w_b^t + s_t)`                 on the grid only
``sr``     :math:`w_b^{t+1} = Q_s(w_b^t + s_t)`                 on the grid only
``bc``     :math:`w_r^{t+1} = \mathrm{clip}(w_r^t + s_t)`,
           :math:`w_b^{t+1} = Q(w_r^{t+1})`                     float latent :math:`w_r` + grid
=========  ==================================================  ========================

With ``Adam`` as the base these are R-ADAM, SR-ADAM and BC-ADAM (the moments stay in
float; NOTES §2 **[choice]**). BC clips :math:`w_r` to the grid's range **[BC2015]** and
quantizes it with ``bc_rounding`` (``"nearest"``, the poster's BC; ``"stochastic"`` as in
BinaryConnect's stochastic variant and Theorem 4).

The model's parameters always hold the quantized weights (after construction and after
every :meth:`~QuantizedOptimizer.step`), so ``model(x)`` is the quantized model. SR's
randomness for parameter ``i`` at step ``t`` is keyed by :func:`qtrain.rng.stream_key`
``(seed, t, i)``: resumable bit-for-bit and identical across data-parallel replicas.

>>> import torch
>>> from qtrain import Grid, QuantizedOptimizer, conv_weights
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
>>> _ = model(torch.zeros(1, 1, 5, 5))
>>> opt = QuantizedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), "sr",
...                          Grid.binary(0.1), params=conv_weights(model), seed=0)
>>> model(torch.randn(8, 1, 5, 5)).square().mean().backward(); _ = opt.step()
>>> w = model[0].weight  # conv weights are binary after every step
>>> torch.equal(w.abs(), torch.full_like(w, 0.1))
True
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from .grid import Grid
from .rng import stream_key
from .rounding import ROUNDINGS, quantize

__all__ = ["METHODS", "QuantizedOptimizer", "conv_weights", "named_conv_weights"]

METHODS = ("float", "bc", "r", "sr")
GridSpec = Union[Grid, Callable[[torch.Tensor], Grid]]


def named_conv_weights(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every convolution layer (``Conv1d/2d/3d`` and transposed), in order."""
    out, seen = [], set()
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((f"{mname}.weight" if mname else "weight", m.weight))
    return out


def conv_weights(model: nn.Module) -> List[nn.Parameter]:
    """The weights of a model's convolution layers: what the paper quantizes (NOTES §4)."""
    return [p for _, p in named_conv_weights(model)]


def _delegated(name: str) -> property:
    """An attribute read from and written to ``self.base`` (the wrapped optimizer owns it)."""
    return property(lambda self: getattr(self.base, name), lambda self, value: setattr(self.base, name, value),
                    doc=f"``base.{name}``")


class QuantizedOptimizer(torch.optim.Optimizer):
    """Wrap ``base`` so that ``params`` are trained by ``method`` on ``grid``.

    Args:
        base: any ``torch.optim.Optimizer``; it owns the param groups (LR schedulers work on
            this wrapper or on ``base`` alike) and its own state (e.g. Adam's moments).
        method: ``"float"``, ``"bc"``, ``"r"`` or ``"sr"``.
        grid: a :class:`~qtrain.Grid`, or a callable ``param -> Grid`` evaluated once here
            (per-layer scales such as ``lambda p: Grid.binary(p.abs().mean().item())``).
        params: the tensors to quantize, or ``(name, tensor)`` pairs (names label the
            diagnostics); default: every parameter of ``base``. Others train in float.
        seed: keys SR's randomness (and BC's with ``bc_rounding="stochastic"``).
        bc_rounding: how BC maps latent to forward weights, ``"nearest"`` or ``"stochastic"``.
        check_finite: refuse to step (``FloatingPointError``, nothing changed) when a gradient
            holds NaN or inf.
    """

    def __init__(self, base: torch.optim.Optimizer, method: str, grid: GridSpec,
                 params: Optional[Iterable] = None, seed: int = 0, bc_rounding: str = "nearest",
                 check_finite: bool = True):
        if not isinstance(base, torch.optim.Optimizer) or isinstance(base, QuantizedOptimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer such as torch.optim.Adam(...), got {type(base).__name__}")
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {METHODS}")
        if bc_rounding not in ROUNDINGS:
            raise ValueError(f"bc_rounding={bc_rounding!r} is not one of {ROUNDINGS}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an int")
        self.base, self.method, self.seed, self.bc_rounding = base, method, seed, bc_rounding
        self.check_finite = check_finite
        # what torch.optim.Optimizer.__init__ sets up, minus the param groups (base has them)
        for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                      "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                      "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"):
            setattr(self, hooks, OrderedDict())
        self._patch_step_function()

        owned = {id(p) for g in base.param_groups for p in g["params"]}
        named = self._named(params if params is not None else [p for g in base.param_groups for p in g["params"]])
        for name, p in named:
            if id(p) not in owned:
                raise ValueError(f"parameter {name!r} (shape {tuple(p.shape)}) is not in the base optimizer's param groups; "
                                 "build the base optimizer over it too")
        self.names = [n for n, _ in named]
        self.qparams = [p for _, p in named]
        self.grids = [self._grid_for(grid, n, p) for n, p in named]
        self.step_count = 0
        self.latents: List[torch.Tensor] = []
        self._diag: dict = {}
        if method != "float":
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(self.qparams, self.grids)):
                    if method == "bc":
                        latent = p.detach().clone().clamp_(g.low, g.high)
                        self.latents.append(latent)
                        p.copy_(quantize(latent, g, bc_rounding, self._key(i)))
                    else:
                        p.copy_(quantize(p, g, "nearest" if method == "r" else "stochastic", self._key(i)))

    # -- torch.optim.Optimizer surface ---------------------------------------------------------
    param_groups = _delegated("param_groups")
    state = _delegated("state")
    defaults = _delegated("defaults")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to ``base`` (its parameters train in float)."""
        self.base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        grids = sorted({repr(g) for g in self.grids}) if len(self.grids) <= 64 else ["(per-layer)"]
        return (f"QuantizedOptimizer(method={self.method!r}, grid={', '.join(grids) or None}, "
                f"quantized={len(self.qparams)} tensors, seed={self.seed},\n  base={self.base!r})")

    # -- the update ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One step of ``method``; returns ``closure()``'s loss if given.

        If anything raises (a non-finite gradient, NaN after the update, ...), the quantized
        parameters and BC's latent weights are restored to their values before the step; the
        base optimizer's own state (e.g. Adam's moments) may have advanced.
        """
        if self.method == "float":
            if self.check_finite and closure is None:
                self._check_grads()
            return self.base.step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.check_finite:
            self._check_grads()
        old = [p.detach().clone() for p in self.qparams]
        old_latents = [latent.clone() for latent in self.latents]
        self.step_count += 1
        try:
            if self.method == "bc":
                for p, latent in zip(self.qparams, self.latents):
                    p.copy_(latent)  # the base step moves the latent weights ...
            self.base.step()  # ... with the gradient taken at the quantized weights
            rounding = {"r": "nearest", "sr": "stochastic", "bc": self.bc_rounding}[self.method]
            new = []
            for i, (p, g) in enumerate(zip(self.qparams, self.grids)):
                src = p
                if self.method == "bc":
                    src = self.latents[i].copy_(p).clamp_(g.low, g.high)
                new.append(quantize(src, g, rounding, self._key(i)))
        except BaseException:
            for p, o in zip(self.qparams, old):
                p.copy_(o)
            for latent, o in zip(self.latents, old_latents):
                latent.copy_(o)
            self.step_count -= 1
            raise
        for i, (p, q) in enumerate(zip(self.qparams, new)):
            changed = q != old[i]
            stalled = (~changed & (p != old[i])).float().mean() if self.method == "r" else None
            self._diag[self.names[i]] = (changed.float().mean(), stalled)
            p.copy_(q)
        return loss

    def _key(self, index: int) -> int:
        return stream_key(self.seed, self.step_count, index)

    def _check_grads(self) -> None:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads or bool(torch.stack([n.float() for n in torch._foreach_norm(grads)]).isfinite().all()):
            return
        qnames = {id(p): n for n, p in zip(self.names, self.qparams)}
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None and not bool(p.grad.isfinite().all()):
                    name = qnames.get(id(p), f"param_groups[{gi}]['params'][{pi}]")
                    raise FloatingPointError(
                        f"non-finite gradient (NaN/inf) in {name} before step {self.step_count + 1}; nothing was "
                        "updated: lower the learning rate, clip gradients, or check the loss")

    def diagnostics(self) -> dict:
        """Per quantized parameter, from the last step: ``changed``, the fraction of entries whose
        quantized value moved, and ``stalled`` (R only; else ``None``), the fraction whose update
        was non-zero but too small to leave their grid level (:math:`|s_t| < \\Delta/2`)."""
        return {n: {"changed": float(c), "stalled": None if s is None else float(s)}
                for n, (c, s) in self._diag.items()}

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``base.state_dict()`` plus a ``"qtrain"`` entry: method, seed, step, grids, latents."""
        sd = self.base.state_dict()
        sd["qtrain"] = {"version": 1, "method": self.method, "seed": self.seed, "step": self.step_count,
                        "bc_rounding": self.bc_rounding, "names": list(self.names),
                        "grids": [g.to_dict() for g in self.grids], "latents": list(self.latents)}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        q = sd.pop("qtrain", None)
        if q is None:
            raise ValueError("optimizer state has no 'qtrain' entry: it was not saved by a QuantizedOptimizer")
        for key, mine in (("method", self.method), ("bc_rounding", self.bc_rounding)):
            if q.get(key) != mine:
                raise ValueError(f"checkpoint was saved with {key}={q.get(key)!r} but this optimizer has {mine!r}")
        if len(q["names"]) != len(self.qparams):
            raise ValueError(f"checkpoint quantizes {len(q['names'])} tensors, this optimizer {len(self.qparams)}; "
                             "build the optimizer over the same model and params")
        grids = [Grid.from_dict(g) for g in q["grids"]]
        for name, g_saved, g_now in zip(self.names, grids, self.grids):
            if g_saved != g_now:
                raise ValueError(f"grid mismatch for {name}: checkpoint {g_saved!r}, optimizer {g_now!r}")
        if len(q["latents"]) != len(self.latents):
            raise ValueError(f"checkpoint holds {len(q['latents'])} latent tensors, this optimizer {len(self.latents)}")
        for name, lat, p in zip(self.names, q["latents"], self.qparams):
            if tuple(lat.shape) != tuple(p.shape):
                raise ValueError(f"latent weights for {name} have shape {tuple(lat.shape)}, parameter {tuple(p.shape)}")
        self.base.load_state_dict(sd)
        self.seed, self.step_count = int(q["seed"]), int(q["step"])
        with torch.no_grad():
            for mine, saved in zip(self.latents, q["latents"]):
                mine.copy_(saved)

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _named(params: Iterable) -> List[Tuple[str, torch.Tensor]]:
        out, seen = [], set()
        for i, item in enumerate(params):
            name, p = item if isinstance(item, tuple) else (f"param{i}", item)
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must hold tensors or (name, tensor) pairs, got {type(p).__name__}")
            if not p.is_floating_point():
                raise ValueError(f"parameter {name!r} has dtype {p.dtype}; only floating-point tensors can be quantized")
            if id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
        return out

    @staticmethod
    def _grid_for(grid: GridSpec, name: str, p: torch.Tensor) -> Grid:
        g = grid(p) if callable(grid) and not isinstance(grid, Grid) else grid
        if not isinstance(g, Grid):
            raise TypeError(f"grid for {name!r} is {type(g).__name__}; expected a qtrain.Grid (or a callable returning one)")
        return g

