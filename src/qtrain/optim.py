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
float; our **[choice]**). BC clips :math:`w_r` to the grid's range **[BC2015]** and
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
from collections.abc import Mapping
from typing import Callable, Dict, Iterable, List, Optional, Union

import torch
from torch import nn

from ._optim_load import load_state, saved_state
from ._optim_support import (LOW_PRECISION, StepRecord, as_int, check_grid_names, check_representable, delegated,
                             end_float32_work, float32_work, grad_values, grid_for, half_level_gap, lend_latents,
                             named_conv_weights, needs_closure, return_latents, store_exact, tensors_to_quantize)
from .dynamic import DynamicGrid, clip_latent, dynamic_specs, refresh as refresh_dynamic
from .grid import Grid
from .lowprec_state import check_state_dtype, lowprec_step, round_chunks
from ._packed import PackedRounding, grads_finite
from ._sharded import ShardLayout, all_ranks_finite, grid_input, local_grads
from .rng import M64, resolve_key, splitmix64, stream_key
from .rounding import ROUNDINGS, quantize, quantize_into

__all__ = ["METHODS", "QuantizedOptimizer", "conv_weights", "named_conv_weights"]

METHODS = ("float", "bc", "r", "sr")
GridSpec = Union[Grid, DynamicGrid, Callable[[torch.Tensor], Grid], Dict[str, Union[Grid, DynamicGrid]]]
_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
          "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
          "_optimizer_load_state_dict_post_hooks")


def conv_weights(model: nn.Module) -> List[nn.Parameter]:
    """The weights of a model's convolution layers: what the paper quantizes (its Table 1 protocol)."""
    return [p for _, p in named_conv_weights(model)]


class QuantizedOptimizer(torch.optim.Optimizer):
    """Wrap ``base`` so that ``params`` are trained by ``method`` on ``grid``.

    Args:
        base: any ``torch.optim.Optimizer``; it owns the param groups (LR schedulers work on
            this wrapper or on ``base`` alike) and its own state (e.g. Adam's moments).
            Optimizers whose ``step`` requires a closure (``torch.optim.LBFGS``) are accepted
            for ``"float"`` only: they evaluate the loss at trial points off the grid.
        method: ``"float"``, ``"bc"``, ``"r"`` or ``"sr"``.
        grid: a :class:`~qtrain.Grid`; a callable ``param -> Grid`` evaluated once here
            (per-layer scales such as ``lambda p: Grid.binary(p.abs().mean().item())``); or a
            dict ``{name: Grid}`` with one entry per name in ``params``; a
            :class:`~qtrain.dynamic.DynamicGrid` (also as a dict value) is re-evaluated on the
            tensor being rounded at every step (BitNet's absmean ternary scale). ``grids[i]`` is
            the current grid of tensor ``i``; assigning a new ``Grid`` there between steps takes
            effect at the next step (and is saved by :meth:`state_dict`).
        params: the tensors to quantize, or ``(name, tensor)`` pairs (names label the
            diagnostics and key a dict ``grid``). Default: the weights of the Linear and Conv
            layers among ``base``'s parameters, i.e. every one with ``ndim >= 2`` (named
            ``param<i>`` by their position in ``base``); biases and normalisation parameters
            (1-D) train in float, as do all others not listed. A bc/r/sr optimizer with
            nothing to quantize is refused. The paper quantizes conv weights only:
            ``params=named_conv_weights(model)``.
        seed: any integer; keys SR's randomness (and BC's with ``bc_rounding="stochastic"``).
        bc_rounding: how BC maps latent to forward weights, ``"nearest"`` or ``"stochastic"``.
        check_finite: refuse to step (``FloatingPointError``, nothing changed) when a gradient
            (dense or sparse) holds NaN or inf (one read of every gradient: a kernel call over the float32 CPU ones, a batched norm over the rest).
        state_dtype: ``torch.bfloat16`` or ``torch.float16``: keep the base optimizer's moments
            in that dtype, written back with stochastic rounding, and run its step (SGD, Adam, AdamW)
            chunk by chunk in float32 without float32 copies of whole parameters
            (:mod:`qtrain.lowprec_state`); ``torch.float32``: the same step, state in float32.
        diagnostics: keep the quantized weights of the step before (one copy of them, and of
            BC's latents, per step) to report :meth:`diagnostics` and to restore them when a step
            raises after the base step. Off by default: the step then copies nothing.
        record_steps: keep, per quantized tensor, the largest absolute base step
            :math:`\\max|s_t|` since the last reset (:meth:`step_record`; one copy of the
            quantized tensors per step, or of BC's latents). Off by default.

    float16/bfloat16 quantized parameters: the base step, :math:`w + s_t` and the rounding run
    in float32 (BC's latent weights are float32), and only the grid level is stored, so SR
    stays unbiased; the grid's levels must be representable in the parameter's dtype.
    """

    def __init__(self, base: torch.optim.Optimizer, method: str, grid: GridSpec,
                 params: Optional[Iterable] = None, seed: int = 0, bc_rounding: str = "nearest",
                 check_finite: bool = True, diagnostics: bool = False, record_steps: bool = False,
                 state_dtype: Optional[torch.dtype] = None):
        if not isinstance(base, torch.optim.Optimizer) or isinstance(base, QuantizedOptimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer such as torch.optim.Adam(...), got {type(base).__name__}")
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {METHODS}")
        if bc_rounding not in ROUNDINGS:
            raise ValueError(f"bc_rounding={bc_rounding!r} is not one of {ROUNDINGS}")
        if method != "float" and needs_closure(base):
            raise ValueError(f"{type(base).__name__} needs a closure and evaluates the loss at trial points off the grid, "
                             f"so it cannot run method={method!r}; use it with method='float', or use SGD/Adam for bc/r/sr")
        self.base, self.method, self.seed, self.bc_rounding = base, method, as_int(seed, "seed"), bc_rounding
        self.check_finite, self.track_diagnostics = check_finite, bool(diagnostics)
        # what torch.optim.Optimizer.__init__ sets up, minus the param groups (base has them)
        for hooks in _HOOKS:
            setattr(self, hooks, OrderedDict())
        self._patch_step_function()

        named = tensors_to_quantize(base, params, method)
        self.names = [n for n, _ in named]
        self.qparams = [p for _, p in named]
        if isinstance(grid, Mapping):
            check_grid_names(grid, self.names)
        self._shards = ShardLayout(self.names, self.qparams, method != "float")  # FSDP2 shards: qtrain._sharded
        self.grids = [grid_for(grid, n, grid_input(grid, p)) for n, p in named]
        self.dynamic = dynamic_specs(grid, self.names)  # {index: DynamicGrid}, re-evaluated every step
        self.state_dtype = check_state_dtype(base, state_dtype, method, self.dynamic, self.track_diagnostics)
        self._shards.check_whole(self.names, self.dynamic, self.state_dtype)
        self.step_count = 0
        self._steps = StepRecord(len(self.qparams)) if record_steps and method != "float" else None
        self.latents: List[torch.Tensor] = []
        self._diag: dict = {}
        self._packed, self._fits = PackedRounding(), {}
        self._unquantized: Optional[list] = [] if method in ("r", "sr") else None  # until the first step
        if method != "float":
            check_representable(self.names, self.qparams, self.grids)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(self._shards.locals(self.qparams), self.grids)):
                    rounding = self.bc_rounding if method == "bc" else "nearest" if method == "r" else "stochastic"
                    if method == "bc":
                        work = p.detach().float() if p.dtype in LOW_PRECISION else p.detach().clone()
                        src = clip_latent(self.dynamic[i], g, work, work) if i in self.dynamic else \
                            work.clamp_(*g.bounds(work.dtype))
                        self.latents.append(src)
                    else:
                        pre = p.detach().clone()  # kept until the first step: see _requantize_after_load
                        src = p if p.dtype not in LOW_PRECISION else pre if self.state_dtype is not None else pre.float()
                    if p.dtype in LOW_PRECISION and self.state_dtype is not None:  # chunk by chunk, same bits
                        round_chunks(src, p, g, rounding == "stochastic", resolve_key(self._key(i)), self.names[i])
                    elif p.dtype in LOW_PRECISION:
                        p.copy_(self._round(i, src, rounding, p.dtype))
                    elif p.numel():  # in place, no temporary on the C-kernel path
                        quantize_into(src, p, g, rounding == "stochastic",
                                      resolve_key(self._key(i)) if rounding == "stochastic" else 0, self._shards.starts[i])
                    if method != "bc":  # DTensors: DCP loads their shards without a version bump, so never
                        self._unquantized.append((None,) * 3 if self._shards.dtensor[i] else (pre, p._version, p.data_ptr()))

    # -- torch.optim.Optimizer surface ---------------------------------------------------------
    param_groups = delegated("param_groups")
    state = delegated("state")
    defaults = delegated("defaults")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to ``base`` (its parameters train in float)."""
        self.base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        grids = sorted({repr(g) for g in self.grids}) if len(self.grids) <= 64 else ["(per-layer)"]
        return (f"QuantizedOptimizer(method={self.method!r}, grid={', '.join(grids) or None}, "
                f"quantized={len(self.qparams)} tensors, seed={self.seed},\n  base={self.base!r})")

    # -- copy / pickle: the whole wrapper travels (torch's version keeps only base's three fields)
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("names", "qparams", "grids", "latents"):
            state[key] = list(state[key])  # a shallow copy gets its own lists
        state["dynamic"] = dict(state.get("dynamic", {}))
        state["_diag"] = dict(state["_diag"])
        state["_packed"], state["_fits"] = PackedRounding(), {}  # caches of raw pointers: never shared, never pickled
        state.pop("step", None)  # an LR scheduler's wrapper of step (torch's optimizers drop it too)
        for key in _HOOKS:
            state[key] = OrderedDict(state[key])
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_shards" not in state:  # pickled before sharded parameters were supported
            self._shards = ShardLayout(self.names, self.qparams, self.method != "float")
        self._packed, self._fits = PackedRounding(), {}
        self._patch_step_function()

    # -- the update ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        r"""One step of ``method``; returns ``closure()``'s loss if given.

        The closure (if any) runs once, before the update, at the quantized weights. A
        non-finite gradient raises before anything changes. The step is lean: R/SR round the
        updated weights in place (:math:`w \leftarrow Q(w + s_t)`, no temporary on the C-kernel
        path, one per tensor elsewhere); for BC the parameter holds its latent tensor during the
        base step (``p.data = latent``, then back: no copy), which is then clipped in place and
        rounded into the parameter's own storage.
        With ``diagnostics=True`` the weights before the step are kept (one copy of the quantized
        tensors and of BC's latents per step): :meth:`diagnostics` reports the changes and, if
        anything raises after the base step (NaN or overflow in the update, a level a float16
        parameter cannot hold), the quantized parameters and latents are restored. Without it,
        such a step raises and leaves them partly updated (reload a checkpoint). The base
        optimizer's own state (e.g. Adam's moments) may have advanced either way.
        """
        if self.state_dtype is not None:  # moments in state_dtype (qtrain.lowprec_state)
            return lowprec_step(self, closure)
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
        self._unquantized = None
        track, bc = self.track_diagnostics, self.method == "bc"
        qs = self._shards.locals(self.qparams)  # the rounding's tensors: plain, or each DTensor's local shard
        old = [p.detach().clone() for p in qs] if track else None
        old_latents = [latent.clone() for latent in self.latents] if track else None
        stochastic = self.method == "sr" or (bc and self.bc_rounding == "stochastic")
        self.step_count += 1
        moved = []
        head = splitmix64(splitmix64(self.seed & M64) ^ (self.step_count & M64))  # key i: sm(sm(head ^ i))
        try:
            swapped = float32_work(self.qparams)
            work = {}
            try:
                if self._steps is not None:  # what the base step starts from: w_b (R/SR) or w_r (BC)
                    self._steps.before(self.latents if bc else qs)
                lent = lend_latents(qs, self.latents, self._fits, self.names) if bc else {}
                try:  # BC: the base step moves the latent weights themselves ...
                    self.base.step()  # ... with the gradient taken at the quantized weights
                finally:
                    return_latents(qs, self.latents, lent)
                # what the rounding reads: the updated parameter, or BC's lent latent w_r + s_t
                sources = [self.latents[i] if i in lent else p for i, p in enumerate(qs)] if bc else qs
                if self.dynamic:  # this step's grids from the values about to be rounded (qtrain.dynamic)
                    refresh_dynamic(self, sources, swapped)
                if self._steps is not None:
                    self._steps.after(sources)
                # small float32 CPU tensors: one kernel call for all of them (same bits; qtrain._packed)
                done = set() if track else self._packed.run(qs, self.grids, self.latents if bc else None, stochastic,
                                                             head, frozenset(swapped) | self._shards.offset
                                                             | set(self.dynamic), sources)
                for i, (p, g, x) in enumerate(zip(qs, self.grids, sources)):
                    if i in done:
                        continue
                    if bc and i in self.dynamic:  # w_r <- w_r + s_t, clipped at a multiple of the range if asked
                        x = clip_latent(self.dynamic[i], g, x, self.latents[i])
                    elif bc:  # w_r <- clip(w_r + s_t), in the latent tensor
                        x = torch.clamp(x, *g.bounds(self.latents[i].dtype), out=self.latents[i])
                    elif track and self.method == "r":
                        moved.append(p != old[i])
                    if p.numel():  # an FSDP shard may be empty
                        quantize_into(x, p, g, stochastic, splitmix64(splitmix64(head ^ i)) if stochastic else 0,
                                      self._shards.starts[i])
                work = {i: self.qparams[i].data for i in swapped}  # float32 levels of float16/bfloat16 params
            finally:
                end_float32_work(self.qparams, swapped)
            for i, q in work.items():
                self.qparams[i].copy_(store_exact(q, self.qparams[i].dtype, self.names[i], self.grids[i]))
        except BaseException:
            if track:
                for p, o in zip(qs, old):
                    p.copy_(o)
                for latent, o in zip(self.latents, old_latents):
                    latent.copy_(o)
            self.step_count -= 1
            raise
        if track:
            for i, p in enumerate(qs):
                changed = p != old[i]
                stalled = (~changed & moved[i]).float().mean() if self.method == "r" else None
                self._diag[self.names[i]] = (changed.float().mean(), stalled)
            if self._shards.sharded:  # the fractions of the whole tensors, not of this rank's shards
                self._diag = self._shards.global_fractions(self._diag, qs, self.names)
        return loss

    def _key(self, index: int) -> int:
        return stream_key(self.seed, self.step_count, index)

    def _round(self, index: int, src: torch.Tensor, rounding: str, dtype: torch.dtype) -> torch.Tensor:
        """Quantize ``src`` for parameter ``index`` and return it in ``dtype``, the parameter's
        dtype (float16/bfloat16 parameters: refused unless the dtype holds the level exactly)."""
        start = self._shards.starts[index] if rounding == "stochastic" and src.numel() else 0
        q = quantize_into(src, None, self.grids[index], True, resolve_key(self._key(index)), start) if start \
            else quantize(src, self.grids[index], rounding, self._key(index))
        return store_exact(q, dtype, self.names[index], self.grids[index])

    def _check_grads(self) -> None:
        ok = grads_finite(local_grads(p.grad for g in self.param_groups for p in g["params"]))  # one kernel call
        if self._shards.sharded:  # every rank refuses, or takes, the step alike
            ok = all_ranks_finite(ok, (p for g in self.param_groups for p in g["params"]))
        if ok:
            return
        qnames = {id(p): n for n, p in zip(self.names, self.qparams)}
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None and not bool(grad_values(local_grads([p.grad])[0]).isfinite().all()):
                    name = qnames.get(id(p), f"param_groups[{gi}]['params'][{pi}]")
                    raise FloatingPointError(
                        f"non-finite gradient (NaN/inf) in {name} before step {self.step_count + 1}; nothing was "
                        "updated: lower the learning rate, clip gradients, or check the loss")
        raise FloatingPointError(f"non-finite gradient (NaN/inf) on another rank before step {self.step_count + 1}; "
                                 "nothing was updated: lower the learning rate, clip gradients, or check the loss")

    def diagnostics(self) -> dict:
        """Per quantized parameter, from the last step: ``changed``, the fraction of entries whose
        quantized value moved, and ``stalled`` (R only; else ``None``), the fraction whose update
        was non-zero but too small to leave their grid level (:math:`|s_t| < \\Delta/2`).
        Needs ``diagnostics=True`` at construction."""
        if not self.track_diagnostics and self.method != "float":
            raise ValueError("diagnostics are off: build QuantizedOptimizer(..., diagnostics=True) to record them "
                             "(it keeps one copy of the quantized weights per step)")
        return {n: {"changed": float(c), "stalled": None if s is None else float(s)}
                for n, (c, s) in self._diag.items()}

    def step_record(self, reset: bool = False) -> Dict[str, dict]:
        r"""Per quantized tensor, ``max_abs_base_step`` (the largest :math:`|s_t|` of any entry over the
        steps since the last reset, as computed in the working precision before rounding) and ``half_level_gap``
        (the move that changes a level under :math:`Q_d`: :math:`\Delta/2`; ``None`` on float-format
        grids). R cannot change a weight in a step whose record is below the half gap. Needs
        ``record_steps=True``; ``reset`` starts a new record after reading this one."""
        if self._steps is None:
            raise ValueError("the step record is off: build QuantizedOptimizer(..., record_steps=True) with "
                             "method 'bc', 'r' or 'sr' to keep it")
        out = {n: {"max_abs_base_step": v, "half_level_gap": half_level_gap(g)}
               for n, v, g in zip(self.names, self._shards.global_max(self._steps.values()), self.grids)}
        if reset:
            self._steps.reset()
        return out

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``base.state_dict()`` plus a ``"qtrain"`` entry of plain values and tensors (loadable
        with ``torch.load(weights_only=True)``): method, seed, step, names, shapes, grids, latents
        (and the state dtype, dynamic grid rules and step record where used)."""
        return saved_state(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`: the base optimizer's state and the checkpoint's grids,
        seed, step and BC latent weights (whatever grid and seed this optimizer was built with:
        the checkpoint is the run), so training continues bit-identically. Refuses (one line,
        nothing changed) a checkpoint of another method (BC: another ``bc_rounding``), of another
        number or shape of quantized tensors, or with latents or buffers of the wrong shape,
        dtype or non-finite values (:mod:`qtrain._optim_load` checks all before any change).
        The model's weights come from the model's own ``state_dict``."""
        load_state(self, state_dict)

    def _requantize_after_load(self) -> None:
        """Put the weights on the restored grids. BC: :math:`w_b = Q(w_r)` with the checkpoint's
        key, exactly the forward weights it was saved with. R/SR: weights not touched since this
        optimizer quantized them onto its own grids (the model's state was loaded before it was
        built) go back to their values before that, on the restored grids (:math:`Q_d`): this
        optimizer keeps one copy of them from construction until its first step or load."""
        for i, p in enumerate(self._shards.locals(self.qparams)):
            if self.method == "bc":
                src, rounding = self.latents[i], self.bc_rounding
            elif self._unquantized is not None and self._unquantized[i][1:] == (p._version, p.data_ptr()):
                pre = self._unquantized[i][0]
                src, rounding = pre.float() if pre.dtype in LOW_PRECISION else pre, "nearest"
            else:
                continue
            p.copy_(self._round(i, src, rounding, p.dtype))
        self._unquantized = None
