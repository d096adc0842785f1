"""Figures for :mod:`qtrain.theory`: one function per command, each ``(record, path) -> path``,
and :func:`draw`, the entry point the callers use after ``run(...)``.

matplotlib is imported inside the functions (Agg backend) so ``import qtrain`` stays light.
"""
from __future__ import annotations

from pathlib import Path

from .._io import atomic_savefig

__all__ = ["draw", "plot_convex", "plot_toy", "plot_markov"]

COLORS = {"r": "tab:red", "sr": "tab:orange", "bc": "tab:blue", "bc_d": "tab:cyan"}
LABELS = {"r": "R (Q_d)", "sr": "SR (Q_s)", "bc": "BC, w_b = Q_s(w_r)", "bc_d": "BC, w_b = Q_d(w_r)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def draw(record: dict, out_dir) -> Path:
    """Draw the figure of a theory record (``record["name"]``: convex, convex_float, toy or markov)
    to ``out_dir/<name>.png``, atomically; add its path as ``record["files"]["png"]`` and return it.

    The commands call it after ``run(...)``, which writes ``<name>.json`` to the same folder.
    """
    name = record.get("name")
    if name == "convex_float":
        from .convex_float import plot_convex_float as plot
    else:
        plot = {"convex": plot_convex, "toy": plot_toy, "markov": plot_markov}.get(name)
    if plot is None:
        raise ValueError(f"no figure for a theory record named {name!r}: convex, convex_float, toy or markov")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; pass a directory")
    out.mkdir(parents=True, exist_ok=True)
    png = plot(record, out / f"{name}.png")
    record.setdefault("files", {})["png"] = str(png)
    return png


def _gap_curves(ax, res, methods, fixed, x):
    """Mean gap (± stderr) against ``x`` per method, records with ``fixed = (key, value)``; bounds dashed."""
    key, value = fixed
    for m in methods:
        rs = sorted((r for r in res if r["method"] == m and r[key] == value), key=lambda r: r[x])
        xs = [r[x] for r in rs]
        ax.errorbar(xs, [max(r["gap"], 1e-12) for r in rs], yerr=[r["gap_stderr"] for r in rs],
                    color=COLORS[m], label=LABELS[m], marker="o", ms=3)
        if rs and rs[0]["bound"] is not None:
            ax.plot(xs, [r["bound"] for r in rs], "--", color=COLORS[m], lw=1)


def plot_convex(record: dict, path) -> Path:
    """Row per problem: gap vs T per method at one Δ (bounds dashed), and final gap vs Δ."""
    plt = _plt()
    problems = [p["problem"] for p in record["problems"]]
    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 4 * len(problems)), squeeze=False)
    show = record["plot_delta"]
    for row, prob in zip(axes, problems):
        res = [r for r in record["results"] if r["problem"] == prob]
        ax = row[0]
        _gap_curves(ax, res, record["methods"], fixed=("delta", show), x="T")
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="E[F(w̄_T)] − F(w*)",
               title=f"{prob}: gap vs T at Δ = {show:g} (dashed: bounds)")
        ax.legend(fontsize=7)
        ax = row[1]
        Tmax = max(r["T"] for r in res)
        _gap_curves(ax, res, record["methods"], fixed=("T", Tmax), x="delta")
        ax.set(xscale="log", yscale="log", xlabel="Δ", ylabel=f"gap at T = {Tmax}",
               title=f"{prob}: floor vs Δ (SR slope {_fmt(record['sr_floor_slope'].get(prob))})")
    fig.suptitle("Theorems 1 & 4, Corollary 1: R stalls, SR floors with Δ, BC (Q_s) on a quadratic has no floor")
    fig.tight_layout()
    return _save(fig, path)


def plot_toy(record: dict, path) -> Path:
    """The objective on the grid, then histograms: rows BC / SR, columns learning rates."""
    plt = _plt()
    lrs = record["lrs_descending"]
    fig = plt.figure(figsize=(3 * len(lrs), 8))
    gs = fig.add_gridspec(3, len(lrs))
    ax = fig.add_subplot(gs[0, :])
    ax.plot(record["curve"]["x"], record["curve"]["f"], color="k")
    states = record["results"][0]["states"]
    from qtrain.theory.toy import objective

    ax.plot(states, objective(states), "o", ms=3, color="gray", label="grid levels")
    ax.axvline(record["global_minimizer"], color="g", ls=":", label="global minimizer")
    ax.set(title=f"toy objective {record['objective']}, gradient noise σ = {record['sigma']}", xlabel="x")
    ax.legend(fontsize=8)
    width = states[1] - states[0]
    for i, method in enumerate(("bc", "sr")):
        for j, lr in enumerate(lrs):
            r = next(r for r in record["results"] if r["method"] == method and r["lr"] == lr)
            a = fig.add_subplot(gs[1 + i, j])
            a.bar(r["states"], r["histogram"], width=0.9 * width, color=COLORS[method])
            a.set_ylim(0, 1)
            a.set_title(f"{method.upper()}  lr = {lr:g}\nmass at x* = {r['mass_at_min']:.3f}", fontsize=9)
    fig.suptitle(f"Distribution of the quantized weight over {record['results'][0]['iters']:.0e} iterations")
    fig.tight_layout()
    return _save(fig, path)


def plot_markov(record: dict, path) -> Path:
    """TV(π_α, π̃) vs α; π̃, π_α and the simulated histogram; P(right | move) vs α."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    a = record["alphas"]
    ax[0].loglog(a, record["tv_to_limit"], "o-", label="1-D grid")
    if record.get("product_grid"):
        pg = record["product_grid"]
        ax[0].loglog(pg["alphas"], pg["tv_to_limit"], "s--", label=f"{pg['d']}-D product grid")
    ax[0].set(xlabel="α", ylabel="TV(π_α, π̃)", title="Theorem 5: π_α → π̃ as α → 0")
    ax[0].legend(fontsize=8)
    s = record["states"]
    w = (s[1] - s[0]) / 4
    ax[1].bar([x - w for x in s], record["pi_tilde"], width=w, label="π̃ (limit)", color="k")
    ax[1].bar(s, record["pi_alpha_sim"], width=w, label=f"π_α exact, α = {record['alpha_sim']:g}", color="tab:orange")
    ax[1].bar([x + w for x in s], record["simulated_histogram"], width=w, color="tab:green",
              label=f"simulated SR, {record['sim_steps']:.0e} steps")
    ax[1].axvline(record["minimizer"], color="g", ls=":")
    ax[1].set(xlabel="x", title=f"TV exact vs simulated = {record['tv_exact_vs_simulated']:.4f}")
    ax[1].legend(fontsize=8)
    ax[2].semilogx(a, record["p_right_given_move"], "o-", label="T_α: P(right | move)")
    ax[2].axhline(record["p_right_limit"], color="k", ls="--", label="U: ∫p z⁺ / ∫p |z|")
    ax[2].set(xlabel="α", ylim=(0, 1), title=f"squishing at x = {record['p_right_state']:g}")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(slope) -> str:
    """A log-log slope for a title; there is none with a single Δ."""
    return "n/a: one Δ" if slope is None else f"{slope:.2f}"
