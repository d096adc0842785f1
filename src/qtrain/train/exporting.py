r"""Export a finished (or checkpointed) run as a compact ``.safetensors`` file.

:func:`export_run` rebuilds the run's model from ``config.json``, loads the weights of
``checkpoint.pt``, writes them with :func:`qtrain.export.save_with_grids` (quantized tensors as
bit-packed codes), reloads the file into a fresh model and checks the weights are
bit-identical; with ``evaluate=True`` it also measures that model's test error. The sizes
(export, the same file in float32, ``checkpoint.pt``) go into the run's ``summary.json``
under ``"export"``.

>>> from qtrain.train.exporting import export_run
>>> info = export_run("runs/sr", "runs/sr/model.safetensors", evaluate=True)  # doctest: +SKIP
>>> info["bytes"], info["float32_bytes"], info["test_error"]  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from .. import export
from .._io import atomic_write_json
from ..data import load_dataset
from ..grid import Grid
from ..models import build
from .checkpoint import CHECKPOINT, load_checkpoint
from .config import TrainConfig

__all__ = ["export_run", "build_model"]


def build_model(cfg: TrainConfig):
    """``(model, dataset)`` as :func:`qtrain.train.run` builds them (initial weights; same seed)."""
    from .loop import input_layout, subset

    ds = subset(load_dataset(cfg.data, cfg.data_dir, download=False), cfg)
    channels, size = (3, 224) if cfg.data == "imagenet" else (ds.train_x.shape[1], ds.train_x.shape[-1])
    kwargs = {"width": cfg.width} if cfg.width else {}
    torch.manual_seed(cfg.seed)
    return input_layout(build(cfg.model, ds.num_classes, in_channels=channels, image_size=size, **kwargs), cfg), ds


def trained_model(cfg: TrainConfig, ck: dict, run_dir: Path):
    """``(model, dataset)`` of run ``run_dir`` with its checkpointed weights ``ck["model"]``; a
    checkpoint that does not fit the model ``cfg`` builds is a one-line ``ValueError``."""
    model, ds = build_model(cfg)
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"{run_dir / CHECKPOINT} does not fit the model of {run_dir / 'config.json'} "
                         f"({' '.join(str(e).split())[:100]}); restore the run's own config.json") from None
    return model, ds


def export_run(run_dir: Union[str, Path], out: Union[str, Path], evaluate: bool = False,
               data_dir: Optional[str] = None) -> dict:
    """Write run ``run_dir``'s weights to ``out``; returns (and stores in summary.json) the sizes.
    ``data_dir`` replaces the run's dataset folder (moved since training)."""
    from .config import load_run_config
    from .distributed import Dist
    from .loop import evaluate as eval_net

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, flag="qtrain export RUN")
    if data_dir is not None:
        cfg.data_dir = data_dir
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{run_dir} holds no {CHECKPOINT} (the run stopped before its first save); "
                                f"start it again: qtrain train --config {run_dir / 'config.json'} --out {run_dir}")
    ck = load_checkpoint(run_dir / CHECKPOINT)
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path, run_dir) if summary_path.is_file() else None  # before writing anything
    model, ds = trained_model(cfg, ck, run_dir)
    q = ck["optimizer"].get("qtrain", {})
    grids = {} if q.get("method", cfg.method) == "float" else {
        n: Grid.from_dict(g) for n, g in zip(q.get("names", []), q.get("grids", []))}
    info = export.save_with_grids(model, grids, out)
    fresh, _ = build_model(cfg)
    export.load(fresh, out)
    a, b = model.state_dict(), fresh.state_dict()
    same = all(torch.equal(a[k], b[k]) and (not a[k].is_floating_point()
               or torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8))) for k in a)
    if not same:
        raise RuntimeError(f"export of {run_dir} did not reload bit-identically; please report this")
    info.update(epoch=int(ck["epoch"]), float32_bytes=export.float_size(model),
                checkpoint_bytes=(run_dir / CHECKPOINT).stat().st_size, bit_identical=True)
    info["ratio_to_float32"] = info["bytes"] / info["float32_bytes"]
    if evaluate:
        info["test_error"] = eval_net(fresh, ds, cfg, Dist(), torch.device("cpu"))[1]
    if summary is not None:
        summary["export"] = info
        atomic_write_json(summary_path, summary)
    return info


def _read_summary(path: Path, run_dir: Path) -> dict:
    fix = f"delete it and rebuild it from the checkpoint with: qtrain train --resume {run_dir}"
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as e:  # truncated, not UTF-8, unreadable
        raise ValueError(f"{path} is damaged ({' '.join(str(e).split())[:80]}); {fix}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds {json.dumps(summary)[:20]}, not a run summary; {fix}")
    return summary
