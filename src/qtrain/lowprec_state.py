r"""Low-precision optimizer state: the base optimizer's moments stored in bfloat16 or float16,
updated chunk by chunk in float32 and written back with stochastic rounding.

``QuantizedOptimizer(base, ..., state_dtype=torch.bfloat16)`` runs the step of ``base``
(``torch.optim.SGD``, ``Adam`` or ``AdamW``; the same arithmetic as torch's single-tensor
code) here instead of calling ``base.step()``. For each parameter, chunk :math:`c` of
:math:`C = 2^{16}` entries at a time, it reads the weight (BC: the latent :math:`w_r`), the
gradient and the moments, computes in float32 -- for Adam at step :math:`t`,

.. math::
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad
    v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
    w \leftarrow w - \frac{\alpha}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

(AdamW first :math:`w \leftarrow (1 - \alpha\lambda) w`; Adam's ``weight_decay`` adds
:math:`\lambda w` to :math:`g`; SGD: :math:`b \leftarrow \mu b + (1-\tau) g`,
:math:`w \leftarrow w - \alpha b` or Nesterov's :math:`w - \alpha(g + \mu b)`) -- and writes

* the moments as :math:`Q_s(m)`, :math:`Q_s(v)` onto the state dtype's grid
  (:mod:`qtrain.floatgrid`), so :math:`\mathbb E[Q_s(m)] = m`: unbiased, unlike
  round-to-nearest, which loses every update smaller than half an ulp (the stall the poster
  proves for R, here in the moments);
* the weight through the method, exactly as :class:`~qtrain.QuantizedOptimizer` does it:
  R/SR :math:`w_b \leftarrow Q(w + s_t)`, BC :math:`w_r \leftarrow \mathrm{clip}(w_r + s_t)`,
  :math:`w_b \leftarrow Q(w_r)`; float parameters get :math:`w + s_t` in their dtype.

Nothing of a whole parameter's size is made in float32: the temporaries are a few chunks.
SR's draws are keyed by ``(seed, step, tensor, entry)`` (:mod:`qtrain.rng`; the moments'
keys in their own domain), so a run resumes bit-identically and the bits do not depend on
the chunking. With ``state_dtype=torch.float32`` nothing is rounded and the step equals
torch's and qtrain's own (tests check it bit for bit).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._optim_support import store_exact
from .dynamic import clip_latent
from .floatgrid import quantize_float
from .rng import M64, splitmix64
from .rounding import quantize_slice

__all__ = ["CHUNK", "STATE_DTYPES", "check_state_dtype", "check_saved_state_dtype", "lowprec_step", "cast_state",
           "round_chunks"]

CHUNK = 1 << 16
STATE_DTYPES = {torch.float32: None, torch.bfloat16: "bfloat16", torch.float16: "float16"}
_TAG = 0x5354415445 << 24  # "STATE": the moments' keys never meet the weights' (head ^ i, i < 2^24)
_BASES = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def check_state_dtype(base, state_dtype, method: str, dynamic: dict, diagnostics: bool) -> Optional[torch.dtype]:
    """``state_dtype`` if this optimizer can keep ``base``'s state in it; one-line ``ValueError`` otherwise."""
    if state_dtype is None:
        return None
    if state_dtype not in STATE_DTYPES:
        why = ("float8 moments underflow (Adam's v ~ g^2) without per-block scales, which qtrain does not keep; "
               if "float8" in str(state_dtype) else "")
        raise ValueError(f"state_dtype={state_dtype!r} is not supported; {why}use torch.bfloat16, torch.float16 "
                         "or torch.float32")
    if type(base) not in _BASES:
        raise ValueError(f"state_dtype needs an SGD, Adam or AdamW base (qtrain runs their step chunk by chunk); "
                         f"got {type(base).__name__}: drop state_dtype or use one of those")
    for group in base.param_groups:
        for flag in ("fused", "differentiable", "capturable"):
            if group.get(flag):
                raise ValueError(f"state_dtype does not support {type(base).__name__}({flag}=True); build the base "
                                 f"optimizer without {flag}")
    if diagnostics:
        raise ValueError("diagnostics=True keeps full-size copies of the weights, which state_dtype avoids; drop one")
    if dynamic and method != "bc":
        raise ValueError(f"dynamic grids with state_dtype need method='bc' (the scale is read from the latent "
                         f"weights before rounding); got method={method!r}")
    return state_dtype


def check_saved_state_dtype(saved: dict, state_dtype: Optional[torch.dtype]) -> None:
    """Refuse (one line) a checkpoint's ``"qtrain"`` entry saved with another ``state_dtype``."""
    mine = None if state_dtype is None else str(state_dtype)
    if saved.get("state_dtype") != mine:
        raise ValueError(f"checkpoint was saved with state_dtype={saved.get('state_dtype')} but this optimizer has "
                         f"{mine}; build it with the checkpoint's state_dtype")


def cast_state(base, state_dtype: torch.dtype, saved: dict) -> None:
    """After ``base.load_state_dict(saved)`` (which casts the state to each parameter's dtype, lossy
    for float16 moments of a bfloat16 parameter): take the moments again from ``saved``, in
    ``state_dtype`` (exact: they were saved in it)."""
    params = [p for g in base.param_groups for p in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    for p, i in zip(params, ids):
        for k, v in saved["state"].get(i, {}).items():
            if k != "step" and isinstance(v, torch.Tensor) and v.is_floating_point():
                base.state[p][k] = v.detach().to(device=p.device, dtype=state_dtype, copy=True)


def _key(head: int, index: int) -> int:
    return splitmix64(splitmix64((head ^ index) & M64))


class _Writer:
    """Where one parameter's updated float32 chunk goes: its moments (rounded onto the state dtype)
    and its weight (through the method)."""

    def __init__(self, opt, fmt, head: int, j: int, p: torch.Tensor, qi: Optional[int]):
        self.fmt, self.head, self.j, self.p, self.qi = fmt, head, j, p, qi
        self.method = opt.method if qi is not None else "float"
        self.stochastic = self.method == "sr" or (self.method == "bc" and opt.bc_rounding == "stochastic")
        self.grid = opt.grids[qi] if qi is not None else None
        self.name = opt.names[qi] if qi is not None else f"parameter {j}"
        self.wkey = _key(head, qi) if qi is not None else 0
        self.latent = opt.latents[qi] if self.method == "bc" else None
        self.spec = opt.dynamic.get(qi) if self.method == "bc" else None

    def moment(self, flat: torch.Tensor, new: torch.Tensor, a: int, slot: int) -> None:
        if self.fmt is None:
            flat[a:a + new.numel()].copy_(new)
        else:
            k = _key(self.head, _TAG ^ (self.j << 2 | slot))
            flat[a:a + new.numel()].copy_(quantize_float(new, self.fmt, True, k, a))

    def weight(self, new: torch.Tensor, a: int) -> None:
        b = a + new.numel()
        pf = self.p.view(-1)
        if self.method == "float":
            pf[a:b].copy_(new)
            return
        if self.method == "bc":
            lf = self.latent.view(-1)
            if self.spec is not None:  # dynamic grid: rounded after the whole latent is known (finish)
                lf[a:b].copy_(new)
                return
            new = lf[a:b].copy_(new.clamp_(*self.grid.bounds(lf.dtype)))
        self.round(new, a)

    def round(self, src: torch.Tensor, a: int) -> None:
        q = quantize_slice(src, self.grid, self.stochastic, self.wkey, a)
        self.p.view(-1)[a:a + src.numel()].copy_(store_exact(q, self.p.dtype, self.name, self.grid))

    def finish(self, opt) -> None:
        """BC on a dynamic grid: this step's grid from the whole latent, the clip, then the rounding."""
        if self.spec is None:
            return
        lat = self.latent
        self.grid = opt.grids[self.qi] = self.spec.grid(lat, self.p.dtype, self.name)
        clip_latent(self.spec, self.grid, lat, lat)
        lf = lat.view(-1)
        for a in range(0, lf.numel(), CHUNK):
            self.round(lf[a:a + CHUNK], a)


def round_chunks(src: torch.Tensor, p: torch.Tensor, grid, stochastic: bool, key: int, name: str) -> None:
    """``p <- Q(src)`` (``key`` resolved), CHUNK entries at a time in float32: the same bits as one
    :func:`~qtrain.rounding.quantize` of the whole tensor, without a whole-size float32 temporary."""
    sf, pf = src.reshape(-1), p.view(-1)
    for a in range(0, sf.numel(), CHUNK):
        q = quantize_slice(sf[a:a + CHUNK].to(torch.float32), grid, stochastic, key, a)
        pf[a:a + q.numel()].copy_(store_exact(q, p.dtype, name, grid))


def _flat(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.layout != torch.strided or not t.is_contiguous():
        raise ValueError(f"state_dtype needs dense contiguous parameters and gradients; {what} is "
                         f"{'sparse' if t.layout != torch.strided else 'not contiguous'}: drop state_dtype for it")
    return t.view(-1)


def _chunk(flat: Optional[torch.Tensor], a: int, b: int) -> Optional[torch.Tensor]:
    """Entries ``[a, b)`` as a new float32 tensor (never a view of the stored one)."""
    return None if flat is None else flat[a:b].to(torch.float32, copy=True)


def _adam(opt, group, p, st, w: _Writer) -> None:
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, wd, eps = float(group["lr"]), group["weight_decay"], group["eps"]
    decoupled = group.get("decoupled_weight_decay", type(opt.base) is torch.optim.AdamW)
    if not st:
        st["step"] = torch.tensor(0.0)
        st["exp_avg"] = torch.zeros(p.shape, dtype=opt.state_dtype, device=p.device)
        st["exp_avg_sq"] = torch.zeros(p.shape, dtype=opt.state_dtype, device=p.device)
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = torch.zeros(p.shape, dtype=opt.state_dtype, device=p.device)
    st["step"] += 1
    t = float(st["step"])
    step_size = lr / (1 - beta1 ** t)
    bc2_sqrt = (1 - beta2 ** t) ** 0.5
    src = _flat(w.latent if w.latent is not None else p, w.name)
    g, m, v = _flat(p.grad, f"the gradient of {w.name}"), st["exp_avg"].view(-1), st["exp_avg_sq"].view(-1)
    vmax = st["max_exp_avg_sq"].view(-1) if group["amsgrad"] else None
    for a in range(0, src.numel(), CHUNK):
        b = min(a + CHUNK, src.numel())
        x, gc, mc, vc, vm = _chunk(src, a, b), _chunk(g, a, b), _chunk(m, a, b), _chunk(v, a, b), _chunk(vmax, a, b)
        if group["maximize"]:
            gc.neg_()
        if wd != 0:
            if decoupled:
                x.mul_(1 - lr * wd)
            else:
                gc.add_(x, alpha=wd)
        mc.lerp_(gc, 1 - beta1)
        vc.mul_(beta2).addcmul_(gc, gc, value=1 - beta2)
        if vm is not None:
            torch.maximum(vm, vc, out=vm)
            w.moment(vmax, vm, a, 2)
        denom = ((vm if vm is not None else vc).sqrt() / bc2_sqrt).add_(eps)
        x.addcdiv_(mc, denom, value=-step_size)
        w.moment(m, mc, a, 0)
        w.moment(v, vc, a, 1)
        w.weight(x, a)


def _sgd(opt, group, p, st, w: _Writer) -> None:
    lr, mom, damp, wd = float(group["lr"]), group["momentum"], group["dampening"], group["weight_decay"]
    src = _flat(w.latent if w.latent is not None else p, w.name)
    g = _flat(p.grad, f"the gradient of {w.name}")
    buf = st.get("momentum_buffer") if mom != 0 else None
    first = mom != 0 and buf is None
    if first:
        buf = st["momentum_buffer"] = torch.zeros(p.shape, dtype=opt.state_dtype, device=p.device)
    bf = None if buf is None else buf.view(-1)
    for a in range(0, src.numel(), CHUNK):
        b = min(a + CHUNK, src.numel())
        x, d = _chunk(src, a, b), _chunk(g, a, b)
        if group["maximize"]:
            d.neg_()
        if wd != 0:
            d.add_(x, alpha=wd)
        if bf is not None:
            bc = d.clone() if first else _chunk(bf, a, b).mul_(mom).add_(d, alpha=1 - damp)
            d = d.add_(bc, alpha=mom) if group["nesterov"] else bc
            w.moment(bf, bc, a, 0)
        x.add_(d, alpha=-lr)
        w.weight(x, a)


def lowprec_step(opt, closure=None):
    """One step of ``opt`` (a :class:`~qtrain.QuantizedOptimizer` with a ``state_dtype``): the
    closure (once, at the quantized weights), the finite check, then the update chunk by chunk.
    Returns the closure's loss. A step that raises midway leaves the tensors partly updated
    (as without ``diagnostics`` elsewhere): reload a checkpoint."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    if opt.check_finite:
        opt._check_grads()
    opt._unquantized = None
    opt.step_count += 1
    try:
        with torch.no_grad():
            _update(opt, splitmix64(splitmix64(opt.seed & M64) ^ (opt.step_count & M64)))
    except BaseException:
        opt.step_count -= 1
        raise
    return loss


def _update(opt, head: int) -> None:
    fmt = STATE_DTYPES[opt.state_dtype]
    qindex = {id(p): i for i, p in enumerate(opt.qparams)}
    update = _sgd if isinstance(opt.base, torch.optim.SGD) else _adam
    j = -1
    for group in opt.base.param_groups:
        for p in group["params"]:
            j += 1
            if p.grad is None:
                continue
            w = _Writer(opt, fmt, head, j, p, qindex.get(id(p)))
            update(opt, group, p, opt.base.state[p], w)
            w.finish(opt)

