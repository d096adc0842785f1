"""Table and figure for the float-grid runs: mean ± SEM over seeds of the final test error.

    python docs/results/float_grids/summarize.py RUNS_DIR OUT_DIR
RUNS_DIR holds <config>-s<seed>/ run folders (metrics.jsonl, summary.json).
"""
import json
import math
import statistics
import sys
from pathlib import Path

CONFIGS = [("adam", "ADAM (float32)"), ("bf16-sr-adam", "SR-ADAM, bfloat16"), ("bf16-r-adam", "R-ADAM, bfloat16"),
           ("f8-sr-adam", "SR-ADAM, float8_e4m3fn"), ("f8-r-adam", "R-ADAM, float8_e4m3fn")]


def stall_share(run_dir: Path):
    """Share of the quantized weights whose next ADAM step (from the checkpoint's moments, at the
    final lr) is non-zero but rounded away by Q_d: what R cannot move at the end of training."""
    import torch
    from qtrain import quantize
    from qtrain.grid import Grid
    from qtrain.train.checkpoint import load_checkpoint
    from qtrain.train.exporting import build_model
    from qtrain.train.loop import load_run_config, make_base_optimizer, param_groups, quantized_params

    cfg = load_run_config(run_dir)
    if cfg.method == "float":
        return None
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    model, _ = build_model(cfg)
    model.load_state_dict(ck["model"])
    named_q = quantized_params(model, cfg.quantize)
    base = make_base_optimizer(cfg, param_groups(model, named_q, cfg))
    sd = dict(ck["optimizer"])
    sd.pop("qtrain")
    base.load_state_dict(sd)
    grid = Grid.float(cfg.grid)
    lr_of = {id(p): g["lr"] for g in base.param_groups for p in g["params"]}
    b1, b2 = base.param_groups[0]["betas"]
    eps = base.param_groups[0]["eps"]
    stalled = total = 0
    for _, p in named_q:
        st = base.state[p]
        t = float(st["step"])
        step = -lr_of[id(p)] * (st["exp_avg"] / (1 - b1**t)) / ((st["exp_avg_sq"] / (1 - b2**t)).sqrt() + eps)
        w = p.detach()
        stalled += int(((quantize(w + step, grid) == w) & (step != 0)).sum())
        total += w.numel()
    return 100.0 * stalled / total


def mean_sem(xs):
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def main(runs: Path, out: Path):
    rows, curves = [], {}
    for key, label in CONFIGS:
        done = sorted(p for p in runs.glob(f"{key}-s*") if (p / "summary.json").is_file())
        sums = [json.loads((p / "summary.json").read_text()) for p in done]
        err = [s["test_error"] for s in sums]
        wc = [s["weight_change_mean"] for s in sums if s.get("weight_change_mean") is not None]
        ex = [s["export"] for s in sums if "export" in s]
        m, se = mean_sem(err)
        stall = [x for x in (stall_share(p) for p in done) if x is not None]
        rows.append({"config": key, "label": label, "seeds": [int(p.name.rsplit("-s", 1)[1]) for p in done],
                     "test_error": err, "mean": m, "sem": se, "weight_change_mean": mean_sem(wc)[0] if wc else None,
                     "minutes": [s["seconds"] / 60 for s in sums],
                     "stalled_at_end": mean_sem(stall)[0] if stall else None,
                     "export_bytes": ex[0]["bytes"] if ex else None, "float32_bytes": ex[0]["float32_bytes"] if ex else None,
                     "checkpoint_bytes": ex[0]["checkpoint_bytes"] if ex else None,
                     "export_test_error_matches": all(e.get("test_error") == s["test_error"] for e, s in zip(ex, sums)
                                                      if "test_error" in e) if ex else None})
        per_epoch = {}
        for p in done:
            for line in (p / "metrics.jsonl").read_text().splitlines():
                r = json.loads(line)
                per_epoch.setdefault(r["epoch"], []).append(r["test_error"])
        curves[label] = {e: statistics.mean(v) for e, v in sorted(per_epoch.items())}
    lines = ["| config | seeds | final test error (%) mean ± SEM | per seed | weights changed since init | "
             "next step rounded away by Q_d | export / float32 model bytes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        wc = "–" if r["weight_change_mean"] is None else f"{r['weight_change_mean']:.1f}%"
        size = "–" if r["export_bytes"] is None else f"{r['export_bytes']:,} / {r['float32_bytes']:,}"
        sem = "" if math.isnan(r["sem"]) else f" ± {r['sem']:.2f}"
        st = "–" if r["stalled_at_end"] is None else f"{r['stalled_at_end']:.1f}%"
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {r['mean']:.2f}{sem} | "
                     f"{', '.join(f'{e:.2f}' for e in r['test_error'])} | {wc} | {st} | {size} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": rows, "curves": curves}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, c in curves.items():
        if c:
            ax.plot(list(c), list(c.values()), marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="test error (%), mean over seeds",
           title="smallcnn (width 16) on CIFAR-10, 20k training images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "test_error.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
