"""The Tiny Shakespeare study (issue 19): low-precision and quantized training of a char-level GPT.

Every row trains ``gpt-tiny`` (4 layers, 4 heads, width 128, context 64; 813,568 parameters)
with AdamW and a cosine lr (20 warmup steps, to 0 at the end) at two peak learning rates, for
several seeds, each run its own resumable ``qtrain train`` folder under ``OUT/runs/``; one
torch thread per run, at most ``--workers`` runs at once. A finished run (``summary.json``)
is skipped, a stopped one resumed, so rerunning the same command continues the study. Then it
writes ``lm_table.json``, ``lm_table.md`` (with verdicts on the poster's predictions, by the
rules of Table 1), ``lm_val_loss.png`` and ``RUN.md``.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python docs/results/lm/run_study.py \\
        --data-dir /path/to/tinyshakespeare --out docs/results/lm

Rows whose feature this checkout lacks (``state_dtype``) are reported as not run.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from qtrain._io import atomic_write_bytes, atomic_write_json
from qtrain.experiments import stats
from qtrain.experiments.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

BF16 = ["--weight-dtype", "bfloat16"]
# key, label, qtrain train flags, what the row needs (None: always available)
ROWS = [
    ("float32", "float32 AdamW", [], None),
    ("bf16", "plain bf16 AdamW (all weights and moments bf16)", BF16, None),
    ("r-bf16", "R onto bf16 weights (all weights)", BF16 + ["--method", "r", "--grid", "bfloat16", "--quantize", "every"], None),
    ("sr-bf16", "SR onto bf16 weights (all weights)", BF16 + ["--method", "sr", "--grid", "bfloat16", "--quantize", "every"], None),
    ("sr-bf16-state", "SR onto bf16 weights, bf16 optimizer state",
     BF16 + ["--method", "sr", "--grid", "bfloat16", "--quantize", "every", "--state-dtype", "bfloat16"], "state_dtype"),
    ("sr-fp8", "SR onto float8_e4m3fn weights (block linears)", ["--method", "sr", "--grid", "float8_e4m3fn"], None),
    ("bc-ternary", "BC ternary, dynamic absmean scale (block linears)",
     ["--method", "bc", "--grid", "ternary", "--scale", "dynamic"], "dynamic"),
    ("sr-ternary", "SR ternary, absmean scale at init (block linears)", ["--method", "sr", "--grid", "ternary"], None),
    ("torchao", "torchao bf16 SR AdamW (all weights and moments bf16)", BF16 + ["--optimizer", "torchao-sr-adamw"],
     "torchao"),
]
LABELS = {k: label for k, label, _, _ in ROWS}


def available(need) -> tuple:
    """(ok, reason) for a row's requirement in this checkout."""
    if need is None:
        return True, None
    if need == "state_dtype":
        from qtrain.train.config import TrainConfig
        ok = "state_dtype" in TrainConfig.__dataclass_fields__
        return ok, None if ok else "needs QuantizedOptimizer(state_dtype=...) in the trainer (not in this checkout)"
    if need == "dynamic":
        try:
            import qtrain.dynamic  # noqa: F401
            return True, None
        except ImportError:
            return False, "needs qtrain.dynamic (not in this checkout)"
    if need == "torchao":
        r = subprocess.run([sys.executable, "-c", "from torchao.optim import _AdamW"], capture_output=True, text=True)
        return (True, None) if r.returncode == 0 else (False, "torchao does not import here: " +
                                                       (r.stderr.strip().splitlines() or ["?"])[-1][:120])
    raise ValueError(need)


def base_flags(a) -> list:
    return ["--data", "shakespeare", "--model", "gpt-tiny", "--data-dir", str(a.data_dir), "--optimizer", "adamw",
            "--weight-decay", str(a.weight_decay), "--lr-schedule", "cosine", "--warmup-steps", str(a.warmup),
            "--epochs", str(a.epochs), "--steps-per-epoch", str(a.steps_per_epoch), "--batch-size", str(a.batch_size),
            "--test-subset", str(a.val_windows), "--threads", "1", "--no-progress"]


def run_one(job) -> dict:
    folder, flags = job
    if (folder / "summary.json").is_file():
        return json.loads((folder / "summary.json").read_text())
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = ([sys.executable, "-m", "qtrain", "train", "--resume", str(folder)] if (folder / "checkpoint.pt").is_file()
           else [sys.executable, "-m", "qtrain", "train", *flags, "--out", str(folder)])
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        print(f"FAILED {folder}: {r.stderr.strip()[-300:]}", flush=True)
        return {}
    print(f"done {folder.relative_to(folder.parents[2])}", flush=True)
    return json.loads((folder / "summary.json").read_text())


def claims(cells: dict, lrs: list) -> list:
    """The poster's predictions on this transformer, per peak lr, with Table 1's rules."""
    out = []

    def vals(key, lr):
        return (cells.get((key, lr)) or {}).get("val_losses") or []

    def add(cid, claim, lr, test, direction, effect_name, rule):
        if test is None:
            out.append({"id": cid, "claim": claim, "lr": lr, "verdict": None, "rule": rule,
                        "reason": "needs at least two seeds of both rows"})
            return
        d = stats.decide(test)
        verdict = INCONCLUSIVE if d is None else REPRODUCED if d == direction else NOT_REPRODUCED
        out.append({"id": cid, "claim": claim, "lr": lr, "verdict": verdict, "rule": rule,
                    "effect": f"{effect_name} = {test['diff']:+.4f} ± {test['se']:.4f} nats/char (t = {test['t']:.2f}, "
                              f"df {test['df']:.1f}, p = {test['p_greater']:.2g} one-sided, the poster's direction)"})

    welch_rule = "one-sided Welch t-test over seeds at level 0.05, as Table 1's comparisons"
    for lr in lrs:
        add(f"r-stalls@{lr:g}", "R stalls: R onto bf16 weights ends above float32", lr,
            stats.welch(vals("float32", lr), vals("r-bf16", lr)), "greater", "R − float32", welch_rule)
        add(f"sr-beats-r@{lr:g}", "SR beats R on the same bf16 grid", lr,
            stats.welch(vals("sr-bf16", lr), vals("r-bf16", lr)), "greater", "R − SR", welch_rule)
        add(f"bc-beats-sr@{lr:g}", "at a low bit width (ternary) SR is worse than BC", lr,
            stats.welch(vals("bc-ternary", lr), vals("sr-ternary", lr)), "greater", "SR − BC", welch_rule)
        groups = [vals("sr-ternary", lr), vals("float32", lr), vals("bc-ternary", lr)]
        add(f"bc-close@{lr:g}", "BC is close to float: nearer float32 than half of SR's gap (ternary)", lr,
            stats.contrast(groups, [0.5, 0.5, -1.0]) if all(groups) else None, "greater", "½(SR + float32) − BC",
            "Table 1's rule for 'BC-ADAM comparable to ADAM': the contrast ½(SR + float) − BC > 0, one-sided Welch at 0.05")
    return out


def write_table(out: Path, cells: dict, lrs: list, skipped: dict, settings: dict, partial: bool, keys=None) -> None:
    selected = [r for r in ROWS if keys is None or r[0] in keys]
    rows = []
    for key, label, _, _ in selected:
        for lr in lrs:
            c = cells.get((key, lr))
            row = {"key": key, "label": label, "lr": lr}
            if c and c["val_losses"]:
                row.update(c, val_loss=stats.mean(c["val_losses"]), val_loss_sem=stats.sem(c["val_losses"]))
            else:
                row.update(seeds=[], val_losses=[], val_loss=None, val_loss_sem=None, bytes_per_param=None,
                           seconds=None, not_run=skipped.get(key, "not finished"))
            rows.append(row)
    cl = claims(cells, lrs)
    atomic_write_json(out / "lm_table.json", {"settings": settings, "partial": partial, "rows": rows, "claims": cl})
    lines = ["# Tiny Shakespeare: quantized and low-precision training of a char-level GPT", ""]
    if partial:
        lines += ["**PARTIAL RESULTS**: not every run had finished when this was written (see `not run`).", ""]
    lines += [f"gpt-tiny, AdamW (weight decay {settings['weight_decay']}), cosine lr to 0 with {settings['warmup']} warmup "
              f"steps, {settings['steps']} steps of batch {settings['batch_size']} × 64 characters; validation loss "
              f"(nats/char) on the first {settings['val_windows']} windows of the last 10% of the text; mean ± SE over "
              "seeds. bytes/param: what training holds between steps (weights + optimizer state + BC latents), "
              "measured from the tensors; gradients excluded.", ""]
    lines += ["| row | " + " | ".join(f"val loss, peak lr {lr:g}" for lr in lrs) + " | bytes/param | s/run |",
              "|---|" + "---|" * len(lrs) + "---|---|"]
    for key, label, _, _ in selected:
        cs = [cells.get((key, lr)) for lr in lrs]
        vals = [(f"{stats.mean(c['val_losses']):.4f}" + (f" ± {stats.sem(c['val_losses']):.4f}"
                                                          if len(c["val_losses"]) > 1 else "") +
                 f" (n={len(c['val_losses'])})") if c and c["val_losses"] else "not run" for c in cs]
        done = [c for c in cs if c and c["val_losses"]]
        bpp = f"{done[0]['bytes_per_param']:.2f}" if done else "–"
        sec = f"{stats.mean([c['seconds'] for c in done]):.0f}" if done else "–"
        lines.append(f"| {label} | " + " | ".join(vals) + f" | {bpp} | {sec} |")
    notes = [f"- {LABELS[k]}: not run: {why}" for k, why in skipped.items()]
    lines += ["", "What each row holds (bytes/param above is measured from the tensors and matches this):", "",
              "- float32: float32 weights and AdamW moments (4 + 8 bytes).",
              "- plain bf16 AdamW and torchao: the model cast to bfloat16; torch's AdamW then keeps bf16 moments and "
              "rounds every update to nearest (so small updates are lost: the stall); torchao's `_AdamW("
              "bf16_stochastic_round=True)` rounds the update stochastically (2 + 4 bytes).",
              "- R / SR onto bf16: the same bf16 model, every parameter on the bfloat16 grid through qtrain (`--quantize "
              "every`); AdamW's moments float32 (2 + 8 bytes), or bfloat16 with `--state-dtype bfloat16` (2 + 4 bytes, "
              "moments written back with SR).",
              "- SR onto float8_e4m3fn, BC / SR ternary: the Linear weights of the blocks (786,432 of 813,568 "
              "parameters) on the grid, embeddings, norms and head float32 (BitNet's split). torch has no float8 or "
              "ternary matmul on the CPU, so the grid values are held in float32 tensors (4 + 8 bytes; BC adds its "
              "float32 latents); `qtrain export` packs them to 1 byte (float8) or 2 bits (ternary) per weight.",
              "- BC ternary: BitNet b1.58's absmean scale recomputed from the latent weights at every step "
              "(`--scale dynamic`), latents not clipped; SR ternary: scale = mean |w| of each layer at init "
              "(an absmean recomputed from SR's on-grid weights would only shrink).",
              ] + notes
    lines += ["", "## The poster's predictions on a transformer", "",
              "| claim | peak lr | verdict | effect |", "|---|---|---|---|"]
    for c in cl:
        lines.append(f"| {c['claim']} | {c['lr']:g} | {c['verdict'] or 'no verdict'} | {c.get('effect') or c.get('reason')} |")
    lines += ["", "Rules: " + "; ".join(sorted({c["rule"] for c in cl})) + ".", "",
              "![validation loss](lm_val_loss.png)", "", "![gap to float32](lm_gap.png)", ""]
    atomic_write_bytes(out / "lm_table.md", "\n".join(lines).encode())


def plot(out: Path, runs_dir: Path, cells: dict, lrs: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qtrain._io import atomic_savefig
    from qtrain.train import read_metrics

    fig, axes = plt.subplots(1, len(lrs), figsize=(6 * len(lrs), 4.5), sharey=True, squeeze=False)
    for ax, lr in zip(axes[0], lrs):
        for key, label, _, _ in ROWS:
            c = cells.get((key, lr))
            if not c or not c["val_losses"]:
                continue
            curves = [[r["val_loss"] for r in read_metrics(runs_dir / key / f"lr{lr:g}" / f"seed{s}")] for s in c["seeds"]]
            n = min(len(x) for x in curves)
            mean = [stats.mean([x[i] for x in curves]) for i in range(n)]
            ax.plot([(i + 1) * c["steps_per_epoch"] for i in range(n)], mean, marker="o", label=label)
        ax.set_title(f"peak lr {lr:g}")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (nats/char), mean over seeds")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, out / "lm_val_loss.png", dpi=110)
    plt.close(fig)

    # final validation loss minus float32's, mean ± SE (Welch) per row and lr
    keys = [(k, label) for k, label, _, _ in ROWS if k != "float32" and any((k, lr) in cells for lr in lrs)]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(keys) + 1.5))
    height = 0.8 / len(lrs)
    for j, lr in enumerate(lrs):
        ref = (cells.get(("float32", lr)) or {}).get("val_losses") or []
        ys, xs, errs = [], [], []
        for i, (k, _) in enumerate(keys):
            v = (cells.get((k, lr)) or {}).get("val_losses") or []
            test = stats.welch(ref, v) if ref and v else None
            if test is not None:
                ys.append(i + (j - (len(lrs) - 1) / 2) * height)
                xs.append(test["diff"])
                errs.append(test["se"])
        ax.barh(ys, xs, height=height, xerr=errs, capsize=3, label=f"peak lr {lr:g}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(keys)), [label for _, label in keys], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("final validation loss − float32 AdamW (nats/char), mean ± SE over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    atomic_savefig(fig, out / "lm_gap.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 1e-3])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--val-windows", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rows", nargs="*", help="only these row keys")
    a = p.parse_args(argv)
    out, runs_dir = a.out, a.out / "runs"
    t0 = time.time()
    load_start = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
    skipped, jobs = {}, []
    rows = [r for r in ROWS if not a.rows or r[0] in a.rows]
    for key, _, flags, need in rows:
        ok, why = available(need)
        if not ok:
            skipped[key] = why
    order = [r for r in rows if r[3] != "torchao"] + [r for r in rows if r[3] == "torchao"]  # the side-by-side row last
    for seed in range(a.seeds):  # seed-major: a partial study has every row with fewer seeds
        for key, _, flags, _ in order:
            if key in skipped or (key == "torchao" and seed > 0):
                continue
            for lr in a.lrs:
                folder = runs_dir / key / f"lr{lr:g}" / f"seed{seed}"
                jobs.append((folder, base_flags(a) + flags + ["--lr", str(lr), "--seed", str(seed)]))
    for seed in range(1, a.seeds):  # torchao's remaining seeds after everything else
        for key, _, flags, _ in order:
            if key == "torchao" and key not in skipped:
                jobs += [(runs_dir / key / f"lr{lr:g}" / f"seed{seed}", base_flags(a) + flags + ["--lr", str(lr), "--seed",
                                                                                                  str(seed)])
                         for lr in a.lrs]
    with cf.ThreadPoolExecutor(a.workers) as pool:
        summaries = list(pool.map(run_one, jobs))
    cells = {}
    for (folder, _), s in zip(jobs, summaries):
        key, lr = folder.parts[-3], float(folder.parts[-2][2:])
        c = cells.setdefault((key, lr), {"seeds": [], "val_losses": [], "seconds_each": [], "bytes_per_param": None,
                                         "steps_per_epoch": a.steps_per_epoch})
        if s.get("val_loss") is not None:
            c["seeds"].append(s["config"]["seed"])
            c["val_losses"].append(s["val_loss"])
            c["seconds_each"].append(s["seconds"])
            c["bytes_per_param"] = s["memory"]["bytes_per_param"]
    for c in cells.values():
        c["seconds"] = stats.mean(c["seconds_each"]) if c["seconds_each"] else None
    partial = bool(skipped) or any(len(c["val_losses"]) < a.seeds for c in cells.values())
    settings = {"steps": a.epochs * a.steps_per_epoch, "epochs": a.epochs, "steps_per_epoch": a.steps_per_epoch,
                "batch_size": a.batch_size, "block_size": 64, "warmup": a.warmup, "weight_decay": a.weight_decay,
                "val_windows": a.val_windows, "lrs": a.lrs, "seeds": a.seeds, "threads_per_run": 1, "workers": a.workers}
    write_table(out, cells, a.lrs, skipped, settings, partial, {r[0] for r in rows})
    plot(out, runs_dir, cells, a.lrs)
    write_run_md(out, a, argv, t0, load_start, len(jobs), commit)
    print(f"wrote {out / 'lm_table.md'}" + (" (partial)" if partial else ""))
    return 0


def write_run_md(out: Path, a, argv, t0: float, load_start, n_jobs: int, commit: str) -> None:
    """Append this invocation (command, commit, machine, wall time) to RUN.md."""
    def sh(*cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"

    cpu = next((ln.split(":", 1)[1].strip() for ln in sh("lscpu").splitlines() if ln.startswith("Model name")), "?")
    try:
        import torchao
        tao = torchao.__version__
    except Exception as e:  # noqa: BLE001 (any failure to import is reported)
        tao = f"not importable ({type(e).__name__})"
    args = " ".join(sys.argv[1:] if argv is None else argv)
    args = args.replace(str(a.data_dir), "DATA/tinyshakespeare")  # the folder holding input.txt, wherever it is
    path = out / "RUN.md"
    before = path.read_text() if path.is_file() else "# How this study was run\n\nEach invocation of the driver below (it skips finished runs):\n"
    text = before + f"""
## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}

```bash
PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python docs/results/lm/run_study.py {args}
```

- commit: `{commit}` (the source the runs imported)
- CPU: {cpu}, {os.cpu_count()} cores, shared with other jobs (load average {load_start[0]:.1f} at the start of
  this invocation, {os.getloadavg()[0]:.1f} at its end); one torch thread per run, {a.workers} runs at once
- torch {torch.__version__}, torchao {tao}, Python {platform.python_version()}
- this invocation: {n_jobs} runs (finished ones skipped), {time.time() - t0:.0f} s wall; per-run seconds
  (training + validation, wall) are in `lm_table.json` (`seconds`)
- runs: `runs/<row>/lr<peak lr>/seed<s>/` (config.json, metrics.jsonl, summary.json; checkpoints not committed)
"""
    atomic_write_bytes(path, text.encode())


if __name__ == "__main__":
    sys.exit(main())
