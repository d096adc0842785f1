"""Figure for :mod:`qtrain.theory.convex_float`: SR's gap at T against the grid's step, per problem."""
from __future__ import annotations

from pathlib import Path

from .theory import _plt, _save

__all__ = ["plot_convex_float"]


def plot_convex_float(record: dict, path) -> Path:
    """Per problem: final gap vs Δ_eff for SR on the float grid, SR on the uniform grid with the same
    Δ_eff, R on the float grid; Theorem 1's bound with Δ_eff dashed; each point labelled by format."""
    plt = _plt()
    problems = record["problems"]
    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 4.2), squeeze=False)
    for ax, prob in zip(axes[0], problems):
        rows = sorted((r for r in record["rows"] if r["problem"] == prob), key=lambda r: r["delta_eff"])
        x = [r["delta_eff"] for r in rows]
        for key, label, color, marker in (("sr_float_gap", "SR, float grid", "tab:orange", "o"),
                                          ("sr_uniform_gap", "SR, uniform grid Δ = Δ_eff", "tab:purple", "s"),
                                          ("r_float_gap", "R, float grid", "tab:red", "^")):
            ax.plot(x, [max(r[key], 1e-12) for r in rows], marker=marker, color=color, label=label)
        # a marker as well as the dashed line: with one format (e.g. --grid bfloat16) a line has no length
        ax.plot(x, [r["bound_eff"] for r in rows], "--", marker="_", markersize=14, color="gray", lw=1,
                label="Theorem 1, Δ = Δ_eff")
        for r in rows:
            ax.annotate(r["format"].replace("float", "f"), (r["delta_eff"], max(r["sr_float_gap"], 1e-12)),
                        fontsize=7, xytext=(3, -10), textcoords="offset points")
        ax.set(xscale="log", yscale="log", xlabel="Δ_eff (rms local step at w*)", ylabel=f"gap at T = {record['T']}",
               title=f"{prob}: SR floor on float grids")
        ax.legend(fontsize=7)
    fig.suptitle("Theorem 1 on float formats: the floor follows the local step Δ(w*) = 2^(e−m)")
    fig.tight_layout()
    return _save(fig, path)
