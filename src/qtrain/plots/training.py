"""Figures of training runs: test error vs epoch, and the poster's per-layer weight-change panels.

Inputs are ``{column: {method label: metrics rows}}`` where rows are ``metrics.jsonl`` records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from .._io import atomic_savefig

COLORS = {"ADAM": "black", "BC-ADAM": "tab:blue", "Big SR-ADAM": "tab:green", "Big SR-ADAM (equal steps)": "tab:olive",
          "SR-ADAM": "tab:orange", "R-ADAM": "tab:red"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_curves(by_column: Dict[str, Dict[str, List[dict]]], path: Path) -> Path:
    """Test error (%) vs epoch, one panel per column, one line per method: the mean over seeds
    (rows' ``test_error``) with a shaded ± 1 standard error band (``test_error_sem``, where there
    are two seeds or more); the title says how many seeds each line averages."""
    plt = _plt()
    cols = list(by_column)
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 3.9), squeeze=False)
    seeds = sorted({r.get("seeds", 1) for col in cols for rows in by_column[col].values() for r in rows[-1:]})
    for ax, col in zip(axes[0], cols):
        for label, rows in by_column[col].items():
            if rows:
                x, y = [r["epoch"] for r in rows], [r["test_error"] for r in rows]
                ax.plot(x, y, label=label, color=COLORS.get(label), lw=1.6)
                if all(r.get("test_error_sem") is not None for r in rows):
                    se = [r["test_error_sem"] for r in rows]
                    ax.fill_between(x, [a - b for a, b in zip(y, se)], [a + b for a, b in zip(y, se)],
                                    color=COLORS.get(label), alpha=0.2, lw=0)
        ax.set(title=col, xlabel="epoch", ylabel="test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = "/".join(map(str, seeds)) or "?"
    fig.suptitle(f"Test error per epoch: mean over {n} seed(s)" + ("; band: ± 1 SE over seeds" if max(seeds, default=1) > 1
                 else " (one seed: no spread)"), fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)


def weight_change_panels(by_column: Dict[str, Dict[str, List[dict]]], path: Path) -> Path:
    """% of quantized weights differing from their starting values, per layer, vs epoch;
    one panel per quantized method (rows: columns of the table), as on the poster. Rows holding
    ``weight_change_sem`` (means over seeds) get a ± 1 SE band per layer; the title says so."""
    plt = _plt()
    cols = list(by_column)
    methods = [m for m in COLORS if any(m in by_column[c] and by_column[c][m] and by_column[c][m][0].get("weight_change")
                                       for c in cols)]
    if not methods:
        methods = ["(none)"]
    fig, axes = plt.subplots(len(cols), len(methods), figsize=(3.8 * len(methods), 3.2 * len(cols)),
                             squeeze=False, sharey=True)
    for i, col in enumerate(cols):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            rows = by_column[col].get(m, [])
            layers = list(rows[0]["weight_change"]) if rows and rows[0].get("weight_change") else []
            cmap = plt.get_cmap("viridis")
            for k, layer in enumerate(layers):
                x, y = [r["epoch"] for r in rows], [r["weight_change"][layer] for r in rows]
                color = cmap(k / max(len(layers) - 1, 1))
                ax.plot(x, y, color=color, lw=1.2, label=layer if len(layers) <= 8 else None)
                se = [(r.get("weight_change_sem") or {}).get(layer) for r in rows]
                if all(v is not None for v in se):
                    ax.fill_between(x, [a - b for a, b in zip(y, se)], [a + b for a, b in zip(y, se)], color=color,
                                    alpha=0.2, lw=0)
            ax.set(title=f"{m} ({col})", xlabel="epoch")
            if j == 0:
                ax.set_ylabel("% weights changed")
            ax.grid(alpha=0.3)
            if layers and len(layers) <= 8:
                ax.legend(fontsize=6)
    seeds = sorted({r.get("seeds", 1) for col in cols for rows in by_column[col].values() for r in rows[-1:]})
    fig.suptitle("% of quantized weights changed since the start, per layer: mean over "
                 f"{'/'.join(map(str, seeds)) or '?'} seed(s)" + ("; band: ± 1 SE over seeds" if max(seeds, default=1) > 1
                                                                   else ""), fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)
