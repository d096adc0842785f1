"""The training loop: read top to bottom.

``run(cfg, out_dir)`` locks ``out_dir`` (:mod:`~qtrain.train.lock`), builds data, model and a
:class:`~qtrain.QuantizedOptimizer`, writes a first checkpoint (so a full disk or a read-only
folder shows before training), then per epoch trains, evaluates, appends a line to
``metrics.jsonl`` and writes ``checkpoint.pt`` (digest-checked, holding the metrics history).
``config.json`` holds the settings and where they ran (:mod:`~qtrain.train.provenance`: machine,
data digest); each BC/R/SR row holds the step record (``max_abs_base_step``, ``half_level_gap``).
Within an epoch it also saves every ``checkpoint_minutes`` and on SIGINT/SIGTERM
(:mod:`~qtrain.train.stopping`), recording the batches done :math:`k` and the running sums.
``run(..., resume=True)`` continues from the checkpoint, skipping the first :math:`k` batches
of the epoch; because data order, augmentation and SR's randomness are pure functions of
(seed, epoch, step), the resumed run ends bit-identical to an uninterrupted one. Under
``torchrun`` it trains with DistributedDataParallel (see :mod:`qtrain.train.distributed`), or
with ``--fsdp`` sharded by FSDP2 (see :mod:`qtrain.train.sharding`).
Language models (``--data shakespeare --model gpt-tiny``) take their data, model and
validation from :mod:`qtrain.train.lm` and report ``val_loss``; the rest is shared.

>>> from qtrain.train import TrainConfig, run
>>> cfg = TrainConfig(data="digits", model="smallcnn", method="sr", epochs=1, batch_size=64,
...                   progress=False).validate()
>>> summary = run(cfg, out_dir=None)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import platform
import shlex
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..data import batches, load_dataset, num_batches
from ..data.digest import data_sha256
from ..models import build
from ..optim import QuantizedOptimizer
from . import distributed, lm, provenance, sharding
from .._io import atomic_write_json
from .checkpoint import CHECKPOINT, save_checkpoint
from .config import TrainConfig, load_run_config  # noqa: F401  (re-exported)
from .folder import check_not_foreign, discard_unstarted
from .lock import run_lock
from .metrics import MetricsLog, WeightChangeTracker, error_percent
from .progress import bar_wanted, epoch_line, start_line
from .resume import restore
from .schedule import make_scheduler, per_step
from .setup import glorot_lr_scale, make_base_optimizer, param_groups, quantized_params  # noqa: F401 (public here too)
from .stopping import RunStopped, Stopper, command_line, kept_hint, lower_lr_hint
from .threads import pick_threads

EVAL_BATCH = 500



def pick_device(name: str, d: distributed.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but this torch has no CUDA device; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", d.local_rank) if d.enabled else torch.device(name)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' but this torch has no MPS (Apple GPU) device; use --device cpu")
    return torch.device(name)


def subset(ds, cfg: TrainConfig):
    """The first ``train_subset`` / ``test_subset`` examples (in-memory datasets); with ``val_size``
    the last ``val_size`` training images replace the test set (a validation split for choosing
    settings without looking at the test set) and are removed from training."""
    changes = {}
    if (cfg.train_subset or cfg.test_subset or cfg.val_size) and not hasattr(ds, "train_x"):
        raise ValueError(f"--train-subset/--test-subset/--val-size work on in-memory datasets, not {cfg.data!r}")
    train_x, train_y = ds.train_x, ds.train_y
    if cfg.val_size:
        if cfg.val_size >= len(train_x):
            raise ValueError(f"val_size={cfg.val_size} leaves no training images (the training set has {len(train_x)})")
        changes.update(test_x=train_x[-cfg.val_size:], test_y=train_y[-cfg.val_size:])
        train_x, train_y = train_x[:-cfg.val_size], train_y[:-cfg.val_size]
        changes.update(train_x=train_x, train_y=train_y)
    if cfg.train_subset:
        changes.update(train_x=train_x[:cfg.train_subset], train_y=train_y[:cfg.train_subset])
    if cfg.test_subset:
        test_x, test_y = changes.get("test_x", ds.test_x), changes.get("test_y", ds.test_y)
        changes.update(test_x=test_x[:cfg.test_subset], test_y=test_y[:cfg.test_subset])
    return dataclasses.replace(ds, **changes) if changes else ds


def input_layout(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """With ``cfg.channels_last``, image batches enter ``model`` channels-last (a forward pre-hook:
    its state_dict and checkpoints stay as they are). Used wherever a run's model is rebuilt."""
    if cfg.channels_last:
        model.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last),
                                                          *args[1:]))
    return model


def train_epoch(net, opt, data, total: int, progress: bool, desc: str, check_loss: bool = True,
                micro_batch: Optional[int] = None, start: int = 0, sums: Optional[dict] = None,
                after_step: Optional[Callable[[int, dict], None]] = None) -> Tuple[float, int, int]:
    """One pass over ``data``; returns (summed loss, correct predictions, examples).

    ``micro_batch`` accumulates each batch's gradient over chunks of that size (same mean
    gradient, less memory; batch-norm statistics are then per chunk). Stops on a non-finite
    loss (``check_loss``; under DDP a NaN on one rank reaches every rank through the averaged
    gradients instead, and the optimizer's gradient check stops them all). A resumed epoch
    skips its first ``start`` batches (already trained; the batch order is a function of seed
    and epoch) and continues the running ``sums``; ``after_step(batches_done, sums)`` runs
    after every optimizer step (mid-epoch checkpoints).
    """
    net.train()
    sums = dict(sums) if sums else {"loss_sum": torch.zeros(()), "correct": 0, "count": 0}
    loss_sum, correct, count = sums["loss_sum"].clone(), torch.tensor(sums["correct"]), sums["count"]
    bar = tqdm(itertools.islice(data, start, None), total=total, initial=start, desc=desc, leave=False,
               disable=not progress, unit="batch")
    for i, (x, y) in enumerate(bar, start):
        opt.zero_grad(set_to_none=True)
        chunks = list(zip(x.split(micro_batch), y.split(micro_batch))) if micro_batch else [(x, y)]
        for j, (xc, yc) in enumerate(chunks):
            sync = j == len(chunks) - 1 or not hasattr(net, "no_sync")  # DDP: all-reduce on the last chunk only
            with contextlib.nullcontext() if sync else net.no_sync():
                out = net(xc)  # images: B×K logits; language models: B×T×V (targets B×T)
                loss = nn.functional.cross_entropy(out.flatten(0, -2), yc.flatten())
                if check_loss and not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at batch {i + 1}")
                (loss * (len(yc) / len(y)) if len(chunks) > 1 else loss).backward()
            loss_sum += loss.detach().cpu() * yc.numel()
            correct += (out.argmax(-1) == yc).sum().cpu()
            count += yc.numel()
        opt.step()
        if progress and i % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / max(count, 1):.3f}")
        if after_step is not None:
            after_step(i + 1, {"loss_sum": loss_sum.clone(), "correct": int(correct), "count": count})
    return loss_sum.item(), int(correct), count


@torch.no_grad()
def evaluate(net, ds, cfg: TrainConfig, d: distributed.Dist, device) -> Tuple[float, float]:
    """Test loss and error (%), summed over ranks."""
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches(ds, "test", EVAL_BATCH * d.world_size, shuffle=False, augment=False, seed=cfg.seed,
                        epoch=0, rank=d.rank, world_size=d.world_size, device=device):
        out = net(x)  # even on an empty share: DDP's forward is a collective (buffer broadcast)
        loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").item()
        correct += int((out.argmax(1) == y).sum())
        count += len(y)
    loss_sum, correct, count = distributed.all_sum([loss_sum, correct, count], d, device)
    return loss_sum / max(count, 1), error_percent(int(correct), int(count))


def run(cfg: TrainConfig, out_dir: Optional[Path], resume: bool = False, epoch_lines: bool = True) -> dict:
    """Train as ``cfg`` says, logging to ``out_dir`` (a temporary folder if ``None``); returns the summary.

    Rank 0 holds the folder's lock (:mod:`qtrain.train.lock`) for the whole run. On CPU, a fresh
    run without ``threads`` picks its thread count from the model's work per step
    (:mod:`qtrain.train.threads`) and records it in ``cfg`` and ``config.json``. Rank 0 shows a
    progress bar on a terminal (``cfg.progress``), else prints one line per epoch to stdout
    (unless ``epoch_lines=False``, e.g. for parallel Table 1 workers)."""
    cfg.validate()
    threads_before = torch.get_num_threads()
    if cfg.threads:  # fixed per run: the thread count changes the reduction order, hence the bits
        torch.set_num_threads(cfg.threads)
    try:
        return _locked_run(cfg, out_dir, resume, epoch_lines)
    finally:
        torch.set_num_threads(threads_before)


def _locked_run(cfg: TrainConfig, out_dir: Optional[Path], resume: bool, epoch_lines: bool) -> dict:
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="qtrain-run-") as tmp:
            return _run(cfg, Path(tmp), resume, epoch_lines, keep=False)
    out_dir = Path(out_dir)
    if not resume and str(out_dir) in ("", "."):
        raise ValueError("--out names no new folder (it is empty or '.'); pass a directory for the run, e.g. --out runs/r1")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; pass a directory for the run")
    fresh = not out_dir.exists()
    with run_lock(out_dir, "train") if distributed.env_rank() == 0 else contextlib.nullcontext():
        if not resume and (out_dir / CHECKPOINT).exists():
            raise ValueError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or pick a new --out")
        if not resume:
            check_not_foreign(out_dir)
        try:
            return _run(cfg, out_dir, resume, epoch_lines)
        except BaseException:
            if fresh and distributed.env_rank() == 0:  # refused before training: leave no folder (run_lock)
                discard_unstarted(out_dir)
            raise


def _run(cfg: TrainConfig, out_dir: Path, resume: bool, epoch_lines: bool, keep: bool = True) -> dict:
    ckpt_path = out_dir / CHECKPOINT
    d = distributed.setup("cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
                          else "cpu", cfg.dist_timeout)
    hint = f"then resume: {command_line(d, f'--resume {shlex.quote(str(out_dir))}')}" if keep else "then start again"
    made = cfg.fsdp and sharding.ensure_group()  # --fsdp in one process: a group of one
    try:
        with distributed.guard(d, cfg.dist_timeout, hint):
            summary = _train(cfg, out_dir, ckpt_path, resume, keep, d, epoch_lines)
            distributed.teardown(d)
    finally:
        sharding.end_group(made)
    return summary


def _train(cfg: TrainConfig, out_dir: Path, ckpt_path: Path, resume: bool, keep: bool, d: distributed.Dist,
           epoch_lines: bool = True) -> dict:
    device = pick_device(cfg.device, d)
    progress = bar_wanted(cfg.progress) and d.main
    epoch_lines = epoch_lines and d.main and not progress
    if device.type == "cuda":  # bit-reproducible kernels (resume and replicas must match exactly)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    # -- data, model, optimizer -------------------------------------------------------------
    if cfg.download and d.enabled:  # rank 0 fetches, the others wait and then read
        if d.main:
            load_dataset(cfg.data, cfg.data_dir, download=True)
        distributed.barrier(d)
    is_lm = lm.is_lm(cfg)
    ds = lm.load(cfg) if is_lm else subset(load_dataset(cfg.data, cfg.data_dir, download=cfg.download and d.main), cfg)
    n_train = cfg.steps_per_epoch if is_lm else num_batches(ds, "train", cfg.batch_size)
    if n_train == 0:
        n = ds.num_examples("train")
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training set ({n} examples); "
                         f"use --batch-size {n} or less")
    torch.manual_seed(cfg.seed)
    kwargs = {"width": cfg.width} if cfg.width else {}
    channels, size = (3, 224) if cfg.data == "imagenet" else (1, 1) if is_lm else (ds.train_x.shape[1], ds.train_x.shape[-1])
    model = (lm.build_model(cfg, ds, device) if is_lm else
             build(cfg.model, ds.num_classes, in_channels=channels, image_size=size, **kwargs).to(device))
    if not is_lm:
        input_layout(model, cfg)
    if cfg.threads is None and not resume and device.type == "cpu":  # recorded in config.json below
        shape, dtype = ((ds.block_size,), torch.long) if is_lm else ((channels, size, size), torch.float32)
        cfg.threads = pick_threads(model, shape, max(1, cfg.batch_size // d.world_size), dtype)
        torch.set_num_threads(cfg.threads)
    named_q = quantized_params(model, cfg.quantize)
    if cfg.method != "float" and not named_q:
        raise ValueError(f"model {cfg.model!r} has no {'conv' if cfg.quantize == 'conv' else 'weight'} tensors to "
                         f"quantize with method {cfg.method!r}; use --quantize all or a conv model")
    scales = {id(p): p.detach().abs().mean().item() for _, p in named_q}
    if cfg.latent_init == "uniform":  # BinaryConnect: latent weights ~ U(-s, s), s the grid's scale (H)
        with torch.no_grad():
            for _, p in named_q:
                g = cfg.make_grid(scales[id(p)])
                p.uniform_(g.low, g.high)
    grids = (cfg.grid_spec(scales) if cfg.scale == "dynamic" else  # BitNet's absmean at every step
             {n: cfg.make_grid(scales[id(p)]) for n, p in named_q})  # from the full weights, before any sharding
    if cfg.fsdp:  # shard parameters, moments and BC latents over the ranks (the names stay)
        named_q = quantized_params(sharding.shard_model(model), cfg.quantize)
    opt = QuantizedOptimizer(make_base_optimizer(cfg, param_groups(model, named_q, cfg)), cfg.method, grids,
                             params=named_q, seed=cfg.seed, bc_rounding=cfg.bc_rounding,
                             record_steps=cfg.method != "float",
                             state_dtype=getattr(torch, cfg.state_dtype) if cfg.state_dtype else None)
    sched = make_scheduler(opt, cfg, n_train)
    tracker = WeightChangeTracker(named_q if cfg.method != "float" else [])  # float weights always move
    net = nn.parallel.DistributedDataParallel(model) if d.enabled and not cfg.fsdp else model
    log = MetricsLog(out_dir, cfg.tensorboard and d.main)
    start, step, partial, history = 0, 0, {}, []
    if resume:
        start, step, partial, history = restore(ckpt_path, cfg, model, opt, sched, tracker, n_train)
        partial = distributed.local_sums(partial, d)

    saved_at = [f"after epoch {start}" + (f", batch {step}" if step else "")] if resume else []

    def save(epoch: int, step: int, partial: dict) -> None:  # rank 0 writes, all ranks wait
        saved_at[:] = [f"after epoch {epoch}" + (f", batch {step}" if step else "")]
        shards = sharding.save(out_dir, model, opt, tracker, d) if cfg.fsdp else None  # all ranks write
        if d.main:
            save_checkpoint(ckpt_path, {"epoch": epoch, "step": step, "partial": partial, "history": history,
                                        "config": cfg.to_dict(), "model": {} if shards else model.state_dict(),
                                        "optimizer": {"sharded": shards} if shards else opt.state_dict(),
                                        "scheduler": sched.state_dict(), "tracker": {} if shards else tracker.state_dict()})
            if shards:  # checkpoint.pt names the new folder: the previous one can go
                sharding.prune(out_dir, shards)
        distributed.barrier(d)

    if d.main:
        atomic_write_json(out_dir / "config.json", provenance.config_record(cfg.to_dict(), out_dir / "config.json",
                                                                            device, ds))
        log.rewrite(history)  # exactly one row per finished epoch, whatever the file held
    if not resume:
        save(0, 0, {})  # fails now, not after an epoch, if the folder cannot take a checkpoint
    if epoch_lines or (progress and resume and start >= cfg.epochs):  # "already finished" also under a bar
        print(start_line(cfg, ds.num_examples("train"), out_dir if keep else "(no --out: nothing kept)", start,
                         resume, step, n_train), flush=True)

    # -- epochs -----------------------------------------------------------------------------
    resume_cmd = command_line(d, f"--resume {shlex.quote(str(out_dir))}") if keep else "nothing is kept without --out"
    epochs = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, desc=f"{cfg.method} {cfg.model}",
                  disable=not progress, unit="epoch")
    with Stopper(cfg.checkpoint_minutes, d, device) as stopper:
        for epoch in epochs:
            t0, done = time.perf_counter(), partial.get("train_seconds", 0.0)
            data = (lm.train_batches(ds, cfg, epoch, d, device) if is_lm else
                    batches(ds, "train", cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed, epoch=epoch,
                            rank=d.rank, world_size=d.world_size, device=device))
            lr = partial.get("epoch_lr", opt.param_groups[0]["lr"])  # the lr the epoch started with

            def after_step(k: int, sums: dict) -> None:
                if cfg.fsdp:  # rank 0's batch-norm statistics on every rank, as DDP
                    sharding.sync_buffers(model, d)
                if per_step(cfg):
                    sched.step()
                save_now, stop = stopper.check()
                if save_now:  # every rank's running sums (a collective: all ranks save together)
                    save(epoch, k, dict(distributed.gather_sums(sums, d, device),
                                        train_seconds=done + time.perf_counter() - t0, epoch_lr=lr))
                    stopper.saved()
                if stop:
                    raise RunStopped(f"stopped by {stopper.signal_name}: saved {ckpt_path} at epoch {epoch + 1}, batch "
                                     f"{k}/{n_train}; resume with: {resume_cmd}", stopper.exit_signal)

            try:
                loss_sum, correct, count = train_epoch(net, opt, data, n_train, progress, f"epoch {epoch + 1}",
                                                       check_loss=not d.enabled, micro_batch=cfg.micro_batch,
                                                       start=step, sums=partial, after_step=after_step)
            except FloatingPointError as e:
                raise FloatingPointError(f"{e} in epoch {epoch + 1}; stopped, {kept_hint(ckpt_path, keep, saved_at)}; "
                                         f"{lower_lr_hint(cfg, out_dir, keep, d)}") from None
            train_s = done + time.perf_counter() - t0
            step, partial = 0, {}
            loss_sum, correct, count = distributed.all_sum([loss_sum, correct, count], d, device)
            if not per_step(cfg):
                with warnings.catch_warnings():  # an epoch resumed after its last batch steps no optimizer first
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                    sched.step()
            test_loss, test_err = (lm.evaluate if is_lm else evaluate)(net, ds, cfg, d, device)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1),
                   "train_error": error_percent(int(correct), int(count)), "test_loss": test_loss,
                   "test_error": test_err, "lr": lr, "seconds": done + time.perf_counter() - t0,
                   "train_seconds": train_s, "images_per_s": count / max(train_s, 1e-9),
                   "weight_change": tracker.percent_changed()}
            if cfg.method != "float":  # could a weight have changed level? (max |s_t| vs Δ/2, per tensor)
                record = opt.step_record(reset=True)
                for key in ("max_abs_base_step", "half_level_gap"):
                    row[key] = {n: r[key] for n, r in record.items()}
            if is_lm:  # the validation split's loss in nats per character (test_* hold the same split)
                row["val_loss"] = test_loss
            history.append(row)
            if d.main:
                log.append(row)
                epochs.set_postfix(test_err=f"{test_err:.2f}%", train_err=f"{row['train_error']:.2f}%")
                if epoch_lines:
                    print(epoch_line(row, cfg.epochs, "val" if cfg.val_size else "test"), flush=True)
            save(epoch + 1, 0, {})
            stopper.saved()
            if epoch + 1 < cfg.epochs and stopper.check(force=True)[1]:
                raise RunStopped(f"stopped by {stopper.signal_name}: saved {ckpt_path} after epoch {epoch + 1}; "
                                 f"resume with: {resume_cmd}", stopper.exit_signal)
    epochs.close()
    log.close()

    # -- summary ----------------------------------------------------------------------------
    summary = _summary(cfg, history, d, device)
    digests = distributed.gather_digests(model, d)
    summary.update(replica_digests=digests, replicas_identical=len(set(digests)) == 1,
                   n_test=ds.num_examples("test"), threads=torch.get_num_threads(),
                   machine=provenance.machine(device), data_sha256=data_sha256(ds),
                   steps=n_train * len(history))  # optimizer steps (whole batches per epoch x epochs)
    if is_lm:
        summary.update(val_loss=history[-1]["val_loss"] if history else None, memory=lm.training_bytes(model, opt))
    if d.main:
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _summary(cfg: TrainConfig, history: list, d: distributed.Dist, device) -> dict:
    last = history[-1] if history else {}
    wc = last.get("weight_change", {})
    return {"data": cfg.data, "model": cfg.model, "method": cfg.method, "optimizer": cfg.optimizer,
            "label": cfg.label, "batch_size": cfg.batch_size, "epochs": cfg.epochs, "lr": cfg.lr,
            "test_error": last.get("test_error"), "train_error": last.get("train_error"),
            "best_test_error": min((r["test_error"] for r in history), default=None),
            "seconds": sum(r["seconds"] for r in history),
            "images_per_s": (sum(r["images_per_s"] * r["train_seconds"] for r in history)
                             / max(sum(r["train_seconds"] for r in history), 1e-9)) if history else None,
            "weight_change": wc, "weight_change_mean": sum(wc.values()) / len(wc) if wc else None,
            "world_size": d.world_size, "device": str(device), "torch": torch.__version__,
            "qtrain": __version__, "host": platform.node(), "config": cfg.to_dict()}
