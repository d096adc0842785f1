"""Figure of the width trend: BC − ADAM and SR − ADAM (points of test error) against the width.

Input is :func:`qtrain.experiments.width.trend`'s dict; this module only draws it.
"""
from __future__ import annotations

import math
from pathlib import Path

from .._io import atomic_savefig
from .training import COLORS, _plt

LABELS = {"bc-adam": "BC-ADAM", "sr-adam": "SR-ADAM"}


def gaps_vs_width(t: dict, path: Path) -> Path:
    """Gap to ADAM per width with ±1 SE bars, the weighted fit in log2(width), the poster's VGG-9 gaps dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for r, label in LABELS.items():
        pts = t["gaps"].get(r) or []
        if not pts:
            continue
        color = COLORS[label]
        ax.errorbar([p["width"] for p in pts], [p["diff"] for p in pts], yerr=[p["se"] or 0.0 for p in pts],
                    marker="o", capsize=3, lw=1.4, color=color, label=f"{label} − ADAM (±1 SE)")
        f = (t.get("fits") or {}).get(r)
        if f:
            ws = [min(p["width"] for p in pts), max(p["width"] for p in pts)]
            ax.plot(ws, [f["intercept_at_mean"] + f["slope"] * (math.log2(w) - f["x_mean"]) for w in ws], ls=":",
                    color=color, lw=1, label=f"fit: {f['slope']:+.1f} ± {f['slope_se']:.1f} per doubling")
        ax.axhline(t["poster_gap"][r], ls="--", color=color, lw=0.8, alpha=0.7)
        ax.text(0.01, t["poster_gap"][r], f"poster VGG-9: {t['poster_gap'][r]:.2f}", fontsize=7, color=color,
                va="bottom", transform=ax.get_yaxis_transform())
    ax.set_xscale("log", base=2)
    ax.set_xticks(t["widths"], [str(w) for w in t["widths"]])
    ax.set(xlabel="smallcnn width (channels of the first block)", ylabel="gap to ADAM (points of test error)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)
