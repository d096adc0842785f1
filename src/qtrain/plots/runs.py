"""``qtrain plot RUN [RUN ...]``: error, loss and weight-change curves of one or more runs.

Runs whose settings differ only in ``seed`` (and in settings that do not change the numbers:
progress, folders, device) form one group, drawn as the mean over its seeds with a shaded
± 1 standard-error band; a single run is drawn as it is. Reads each run's ``config.json`` and
``metrics.jsonl`` only (no torch, unless a run older than a setting the others record is among them:
its default is then read from :class:`~qtrain.train.TrainConfig`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

from .._io import atomic_savefig, read_metrics
from .training import COLORS, _plt

# settings that do not change a run's numbers (or name it), ignored when grouping seeds
_NOT_GROUPED = ("seed", "progress", "data_dir", "download", "device", "tensorboard", "checkpoint_minutes",
                "dist_timeout", "label", "extra",
                "machine", "data_sha256", "earlier_machines")  # where it ran, not a setting (train/provenance.py)
PANELS = (("error", "error (%)", ("test_error", "train_error")), ("loss", "loss", ("test_loss", "train_loss")),
          ("weight change", "% quantized weights changed (mean over layers)", ("weight_change",)))


def gather(run_dirs: Sequence) -> Dict[str, List[List[dict]]]:
    """``{label: [metrics rows of each seed's run]}`` for ``run_dirs``, grouped as the module says."""
    groups: Dict[str, List[List[dict]]] = {}
    keys: Dict[str, str] = {}
    seen: Dict[tuple, Path] = {}  # (settings, seed) -> its run
    configs = []
    unique = list(dict.fromkeys(Path(d).resolve() for d in run_dirs))  # a folder named twice counts once
    for d in unique:
        cfg_path = d / "config.json"
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist; qtrain plot takes --out folders of `qtrain train`")
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{d} is not a run folder (no config.json); qtrain plot takes --out folders of "
                                    "`qtrain train` (or table1's runs/<cell>/seed<s>/)")
        rows = read_metrics(d)
        if not rows:
            raise ValueError(f"{d} has no finished epoch in metrics.jsonl yet; plot it after its first epoch")
        configs.append((d, json.loads(cfg_path.read_text()), rows))
    _fill_newer_settings([c for _, c, _ in configs])
    varying = {k for _, c, _ in configs for k in c if k not in _NOT_GROUPED
               and len({json.dumps(x[1].get(k), sort_keys=True) for x in configs}) > 1}
    for d, cfg, rows in configs:
        key = json.dumps({k: v for k, v in cfg.items() if k not in _NOT_GROUPED}, sort_keys=True)
        if key not in keys:
            name = cfg.get("label") or f"{cfg.get('method')}-{cfg.get('optimizer')}"
            extra = ", ".join(f"{k}={cfg.get(k)}" for k in sorted(varying) if k not in ("method", "optimizer"))
            label = f"{name} ({extra})" if extra else name
            while label in groups:
                label += "'"
            keys[key] = label
            groups[label] = []
        twin = seen.setdefault((key, json.dumps(cfg.get("seed"))), d)
        if twin != d:  # a copy of one run would pass for a second seed and shrink the band
            raise ValueError(f"{twin} and {d} have the same settings and seed {cfg.get('seed')}: the same run twice "
                             "(a copy, or a rerun elsewhere?); pass each run once")
        groups[keys[key]].append(rows)
    return groups


def _fill_newer_settings(configs: List[dict]) -> None:
    """A setting some runs record and an older run lacks was that run's default: fill it in, so the
    older run joins the curve of its settings. Only then is the config (and torch) imported."""
    keys = set().union(*configs) - set(_NOT_GROUPED) if configs else set()
    missing = {k for k in keys if any(k not in c for c in configs)}
    if not missing:
        return
    from ..train.config import TrainConfig, recorded
    for c in configs:
        for k in missing & set(TrainConfig.__dataclass_fields__):
            c[k] = recorded(c, k)


def _series(rows: dict, key: str):
    v = rows.get(key)
    if key == "weight_change":
        return sum(v.values()) / len(v) if v else None
    return v


def mean_band(histories: List[List[dict]], key: str):
    """(epochs, mean, standard error or None) of ``key`` over the seeds, for epochs all reached."""
    n = min(len(h) for h in histories)
    xs, means, ses = [], [], []
    for e in range(n):
        vals = [_series(h[e], key) for h in histories]
        if any(v is None for v in vals):
            continue
        m = sum(vals) / len(vals)
        xs.append(histories[0][e]["epoch"])
        means.append(m)
        ses.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals)) if len(vals) > 1 else None)
    return xs, means, ses


def plot_runs(groups: Dict[str, List[List[dict]]], path) -> Path:
    """Three panels (error, loss, weight change) vs epoch; test solid, train dotted; each group
    its mean over seeds with a ± 1 SE band when it has two seeds or more. One legend below the
    panels names each group once (labels can be long: they list the settings that differ)."""
    plt = _plt()
    from matplotlib.lines import Line2D
    tags = [f"{label} ({len(h)} seeds)" if len(h) > 1 else label for label, h in groups.items()]
    ncol = 1 if max(map(len, tags), default=0) > 60 else min(3, len(tags))
    rows = -(-len(tags) // max(ncol, 1))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2 + 0.25 * rows), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, ((label, histories), tag) in enumerate(zip(groups.items(), tags)):
        color = COLORS.get(label, cycle[i % len(cycle)])
        handles.append(Line2D([], [], color=color, lw=1.6, label=tag))
        for ax, (_, ylabel, keys) in zip(axes[0], PANELS):
            for key in keys:
                xs, ys, ses = mean_band(histories, key)
                if not xs:
                    continue
                ax.plot(xs, ys, ls="-" if key.startswith(("test", "weight")) else ":", color=color, lw=1.6,
                        marker="o" if len(xs) == 1 else None, ms=4)  # one epoch: a point, not an invisible line
                if ses and all(s is not None for s in ses):
                    ax.fill_between(xs, [y - s for y, s in zip(ys, ses)], [y + s for y, s in zip(ys, ses)],
                                    color=color, alpha=0.2, lw=0)
            ax.set(xlabel="epoch", ylabel=ylabel)
    for ax, (title, _, _) in zip(axes[0], PANELS):
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "nothing quantized (float runs)", ha="center", va="center", transform=ax.transAxes)
    many = any(len(h) > 1 for h in groups.values())
    fig.suptitle("Runs per epoch: test solid, train dotted" + ("; seeds: mean with ± 1 SE band" if many else ""),
                 fontsize=10)
    bottom = min(0.45, (0.3 + 0.25 * rows) / (4.2 + 0.25 * rows))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    path = Path(path)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path
