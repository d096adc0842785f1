r"""Batch-norm statistics re-estimated for a run's final weights: ``qtrain bn-reestimate RUN_DIR``.

A net with BatchNorm is evaluated with running statistics, exponential averages over the last
training batches (PyTorch's momentum 0.1: about the last ten steps). If the quantized weights
are still flipping at the end of training, as BinaryConnect's signs do when latent weights sit
near zero, those averages mix statistics of several weight settings, none of them the final one,
and the test error carries that staleness as noise. Re-estimating the statistics once for the
final weights separates the two: with one pass over the training split (the training
augmentation, batches of the run's own size), in train mode and without gradients, each BN
layer gets the plain average over the :math:`N_b` batches,

.. math::

    \hat\mu = \frac{1}{N_b} \sum_b \mu_b, \qquad
    \hat\sigma^2 = \frac{1}{N_b} \sum_b s_b^2,

with :math:`\mu_b` and :math:`s_b^2` the batch mean and unbiased batch variance of the layer's
input (``momentum=None``, PyTorch's cumulative average). Weights are untouched: a noise that
vanishes here came from the statistics, not from the weights.

This is a diagnostic, not part of any protocol: it reads a finished run's checkpoint and writes
nothing into the run.

>>> import torch
>>> from torch import nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
>>> xs = [torch.randn(8, 2) for _ in range(3)]
>>> reestimate_bn(net, xs)
1
>>> h = [net[0](x) for x in xs]
>>> torch.allclose(net[1].running_mean, torch.stack([b.mean(0) for b in h]).mean(0).detach(), atol=1e-6)
True
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import torch
from torch import nn

__all__ = ["reestimate_bn", "check_run", "summarize", "RunUnfinished"]


class RunUnfinished(ValueError):
    """The run has no final weights yet (no ``summary.json``): its checkpoint is mid-training."""


def _bn_layers(model: nn.Module) -> list:
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics: nothing to "
                         "re-estimate (its test error does not depend on batch statistics)")
    return layers


def reestimate_bn(model: nn.Module, inputs: Iterable) -> int:
    """Replace every BatchNorm layer's running statistics by their plain average over ``inputs``
    (tensors, or ``(x, y)`` pairs whose ``x`` is fed); returns the number of BN layers. The
    layers' momentum and the model's train/eval mode are restored afterwards, and on failure (no
    batches, an input that raises) the old statistics too."""
    layers = _bn_layers(model)
    momenta, was_training = [m.momentum for m in layers], model.training
    saved = [{k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))}
             for m in layers]
    seen = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average of the batch statistics
        model.train()
        with torch.no_grad():
            for batch in inputs:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                seen += 1
        if not seen:
            raise ValueError("no batches to re-estimate the BatchNorm statistics from (an empty training split?)")
    except BaseException:
        for m, old in zip(layers, saved):
            m.load_state_dict({**m.state_dict(), **old})
        raise
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.train(was_training)
    return len(layers)


def check_run(run_dir: Union[str, Path], data_dir: Optional[str] = None) -> Dict[str, object]:
    """Test error of finished run ``run_dir``'s final weights with the stored BN statistics and with
    statistics re-estimated over the run's training split (one pass, the training augmentation
    drawn for epoch index ``epochs``, which the run never trained on; batches of the size its BN
    layers saw: ``micro_batch`` or the per-process share of ``batch_size``). ``cell`` is the run
    folder's parent's name (``OUT/runs/<cell>/seed<k>`` in ``qtrain table1``'s layout). ``stored``
    equals the run's last recorded test error when this machine computes the same bits
    (``matches_record``); ``cpu`` names the CPU model it was measured on. Reads only; torch's thread count and global RNG are left as they were.
    An unfinished run (no ``summary.json``) raises :class:`RunUnfinished`."""
    from .._io import read_metrics
    from ..data import batches
    from .checkpoint import CHECKPOINT, load_checkpoint
    from .config import load_run_config
    from .distributed import Dist
    from .exporting import _read_summary, trained_model
    from .lm import is_lm
    from .loop import evaluate
    from .provenance import cpu_model

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, flag="qtrain bn-reestimate RUN")
    if is_lm(cfg):
        raise ValueError(f"{run_dir} is a language-model run ({cfg.data}); bn-reestimate takes image classifiers")
    if not (run_dir / "summary.json").is_file():
        raise RunUnfinished(f"{run_dir} has not finished (no summary.json): its weights are mid-training; finish it "
                            f"first: qtrain train --resume {run_dir}")
    summary = _read_summary(run_dir / "summary.json", run_dir)
    if data_dir is not None:
        cfg.data_dir = data_dir
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{run_dir} holds no {CHECKPOINT}: bn-reestimate needs the run's final weights, "
                                "which only the checkpoint keeps (a copied run holds metrics only)")
    ck = load_checkpoint(run_dir / CHECKPOINT)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global RNG
        model, ds = trained_model(cfg, ck, run_dir)
        _bn_layers(model)  # before spending an evaluation on a model without BN
        per_process = cfg.batch_size // max(1, int(summary.get("world_size", 1) or 1))
        size = min(cfg.micro_batch or per_process, per_process)
        torch.set_num_threads(cfg.threads or threads)  # the run's own count: the same bits as its evaluation
        try:
            stored = evaluate(model, ds, cfg, Dist(), cpu)[1]
            layers = reestimate_bn(model, batches(ds, "train", size, shuffle=True, augment=True, seed=cfg.seed,
                                                  epoch=cfg.epochs, device=cpu))
            reestimated = evaluate(model, ds, cfg, Dist(), cpu)[1]
        finally:
            torch.set_num_threads(threads)
    history = read_metrics(run_dir)
    last = history[-1] if history else {}
    recorded = last.get("test_error") if last.get("epoch") == int(ck["epoch"]) else None
    return {"run": str(run_dir), "cell": run_dir.resolve().parent.name, "seed": cfg.seed, "method": cfg.method,
            "epoch": int(ck["epoch"]), "batch": size, "recorded": recorded, "stored": stored,
            "reestimated": reestimated, "bn_layers": layers, "cpu": cpu_model(),
            "matches_record": recorded is not None and json.dumps(recorded) == json.dumps(stored)}


def check_rows(rows, where: str) -> List[dict]:
    """An earlier report's ``runs`` (``where`` names the file), checked before any run is measured: a
    list of rows with every field the report needs, one per (cell, seed); else a one-line ``ValueError``."""
    fix = "rerun without --keep to measure every run again"
    if not isinstance(rows, list):
        raise ValueError(f"{where}: 'runs' is {type(rows).__name__}, not a list of rows; {fix}")
    num = (int, float)
    need = {"run": str, "cell": str, "seed": int, "epoch": int, "stored": num, "reestimated": num,
            "recorded": (*num, type(None)), "matches_record": bool}
    seen = set()
    for i, r in enumerate(rows):
        bad = [k for k, t in need.items() if not isinstance(r, dict) or k not in r or not isinstance(r[k], t)
               or (isinstance(r[k], bool) and t is not bool)]
        if bad:
            raise ValueError(f"{where}: row {i} is damaged (field {bad[0]!r}); {fix}")
        if (r["cell"], r["seed"]) in seen:
            raise ValueError(f"{where}: row {i} repeats {r['cell']} seed {r['seed']}; {fix}")
        seen.add((r["cell"], r["seed"]))
    return rows


def merge_rows(kept: List[dict], new: List[dict]) -> List[dict]:
    """``kept`` (an earlier report's rows, :func:`check_rows`) with ``new`` ones: a run (cell, seed)
    measured again replaces its old row, runs measured only before are kept (their checkpoints may
    be gone); rows grouped by cell (cells in first-seen order), seeds ascending."""
    fresh = {(r["cell"], r["seed"]): r for r in new}
    rows = [fresh.pop((r["cell"], r["seed"]), r) for r in kept] + list(fresh.values())
    order: Dict[str, int] = {}
    for r in rows:
        order.setdefault(r["cell"], len(order))
    return sorted(rows, key=lambda r: (order[r["cell"]], r["seed"]))


def _mean_se_sd(xs: List[float]):
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return m, sd / math.sqrt(n) if n > 1 else float("nan"), sd


def summarize(rows: List[dict]) -> List[dict]:
    """Per cell (in first-seen order): seeds, mean ± SE and sd of the stored and the re-estimated
    errors, and the mean change (re-estimated − stored)."""
    cells: Dict[str, List[dict]] = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    out = []
    for cell, rs in cells.items():
        s, e = [r["stored"] for r in rs], [r["reestimated"] for r in rs]
        (ms, ses, sds), (me, see, sde) = _mean_se_sd(s), _mean_se_sd(e)
        out.append({"cell": cell, "seeds": sorted(r["seed"] for r in rs), "stored_mean": ms, "stored_se": ses,
                    "stored_sd": sds, "reestimated_mean": me, "reestimated_se": see, "reestimated_sd": sde,
                    "change": me - ms})
    return out
