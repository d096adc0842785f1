r"""Learning-rate schedules of a run: per-epoch steps (the paper) or a per-step cosine.

``lr_schedule="step"`` (Table 1): :math:`\alpha_e = \alpha_0 \gamma^{|\{m \in M : m \le e\}|}`,
stepped once per epoch at the milestones :math:`M`.

``lr_schedule="cosine"`` (language models): with :math:`S` = ``epochs`` × steps per epoch
optimizer steps and :math:`W` = ``warmup_steps``, the lr of step :math:`t = 0, 1, \dots` is

.. math::
    \alpha_t = \alpha_0 \frac{t + 1}{W} \;\; (t < W), \qquad
    \alpha_t = \frac{\alpha_0}{2}\Bigl(1 + \cos\frac{\pi (t - W)}{S - W}\Bigr) \;\; (t \ge W),

decaying to 0 at :math:`t = S` **[choice]**; it is stepped after every optimizer step, and its
position is saved in the checkpoint, so a resumed run follows the same curve.

>>> import torch
>>> p = torch.nn.Parameter(torch.zeros(1))
>>> opt = torch.optim.SGD([p], lr=1.0)
>>> sched = cosine(opt, total_steps=4, warmup_steps=0)
>>> lrs = []
>>> for _ in range(4):
...     lrs.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); sched.step()
>>> lrs
[1.0, 0.8536, 0.5, 0.1464]
"""
from __future__ import annotations

import math
import os
import warnings

import torch

__all__ = ["cosine", "make_scheduler", "per_step"]


class _Cosine:
    """The lr factor of step ``t`` (a callable object, so LambdaLR's state_dict keeps its settings)."""

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t - self.warmup_steps, span) / span))


def cosine(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps``, then cosine from the peak lr to 0 at ``total_steps``."""
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be smaller than the run's {total_steps} steps")
    return torch.optim.lr_scheduler.LambdaLR(opt, _Cosine(total_steps, warmup_steps))


def per_step(cfg) -> bool:
    """Whether the run's scheduler steps after every optimizer step (else once per epoch)."""
    return cfg.lr_schedule == "cosine"


def make_scheduler(opt: torch.optim.Optimizer, cfg, steps_per_epoch: int):
    """The scheduler ``cfg.lr_schedule`` asks for (``steps_per_epoch``: optimizer steps in one epoch)."""
    if cfg.lr_schedule == "cosine":
        return cosine(opt, cfg.epochs * steps_per_epoch, cfg.warmup_steps)
    milestones = cfg.milestones()
    if (cfg.lr_milestones and min(milestones) >= cfg.epochs and cfg.lr_gamma != 1
            and os.environ.get("RANK", "0") == "0"):  # set explicitly, none in reach; once per job
        warnings.warn(f"qtrain: lr_milestones {milestones} are all at or past epochs={cfg.epochs}, so the lr never "
                      "decays in this run (a preset shortened with --epochs?); unless it is a first part to extend "
                      f"with --resume, give milestones below {cfg.epochs} (--lr-milestones; table1: --set "
                      "lr_milestones=[...])", stacklevel=2)
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones, cfg.lr_gamma)
