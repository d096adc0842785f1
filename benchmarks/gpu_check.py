"""GPU check, ready to run when a CUDA device is lent: prints one table.

1. CPU vs CUDA bit-identity of ``quantize`` for both roundings (Q_d, Q_s), every grid kind
   (uniform unbounded and with bits, binary, ternary) and float32/float64 -- CPU float32 runs
   the C kernel (when built), CUDA the Triton code of the compiled path; the eager fallback on
   CUDA is checked too -- and the float-format grids (bfloat16, float16, float8_e4m3fn,
   float8_e5m2: CPU's C kernel vs CUDA's torch bit path).
2. SR of 10^8 float32 values on the GPU vs ``x.clone()`` (and the naive one-liner
   ``floor(x/Δ + rand_like(x))·Δ``), medians of interleaved rounds; compile time separately.
3. One ResNet-20 training step (batch 128) per method (BC/SR/R-ADAM) vs plain ADAM on the GPU.

Exits 0 with a message when there is no CUDA device. Exit 1 if any bit-identity check fails.
``--device cpu`` runs the same script against the CPU (a dry run that keeps it from rotting: the
test suite runs it small).

    .venv/bin/python benchmarks/gpu_check.py [--n 100000000] [--rounds 5] [--steps 10] [--batch 128]
        [--identity-n 1000003] [--device cuda|cpu]
"""
import argparse
import statistics
import sys
import time

import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, _compiled, _kernel, named_conv_weights, quantize
from qtrain.models import build
from qtrain.rng import resolve_key
from qtrain.floatgrid import _sr32, fmt_info
from qtrain.rounding import _eager

GRIDS = [Grid.uniform(2**-4), Grid.uniform(0.1), Grid.uniform(1 / 7), Grid.uniform(0.3, bits=2),
         Grid.uniform(2**-10, bits=32), Grid.binary(1.0), Grid.binary(0.37), Grid.ternary(0.5)]
FLOAT_FORMATS = ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]
ROWS = []
DEVICE = "cuda"


def row(check, result, detail=""):
    ROWS.append((check, result, detail))
    print(f"  {check}: {result} {detail}", flush=True)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def sync_time(fn, reps=1):
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t) / reps


def side_by_side(cases, rounds, reps=1):
    for fn in cases.values():
        fn()
    times = {k: [] for k in cases}
    names = list(cases)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(sync_time(cases[k], reps))
    return {k: statistics.median(v) for k, v in times.items()}


def bit_identity(n=1_000_003):
    gen = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1e-3, -1e-3, 1e30, -1e30, 1e-40, 0.5, -0.5, float("inf"), -float("inf")])
    failures = 0
    for dtype, it in ((torch.float32, torch.int32), (torch.float64, torch.int64)):
        for g in GRIDS:
            x = torch.cat([torch.randn(n, generator=gen, dtype=torch.float64) * 3, special.double()]).to(dtype)
            if not g.bounded:
                x = x[x.isfinite()]
            xc = x.to(DEVICE)
            for rounding in ("nearest", "stochastic"):
                cpu = quantize(x, g, rounding, generator=7)
                gpu = quantize(xc, g, rounding, generator=7).cpu()
                eager = _eager(xc, g, rounding == "stochastic", resolve_key(7)).cpu()
                same = torch.equal(cpu.view(it), gpu.view(it))
                same_eager = torch.equal(cpu.view(it), eager.view(it))
                failures += (not same) + (not same_eager)
                if not (same and same_eager):
                    bad = int((cpu.view(it) != gpu.view(it)).sum())
                    row(f"bit-identity {dtype} {g!r} {rounding}", "FAIL",
                        f"{bad} of {x.numel()} differ (compiled); eager {'ok' if same_eager else 'differs'}")
    kinds = "uniform, uniform+bits, binary, ternary"
    row(f"CPU vs {DEVICE} bit-identity, Q_d and Q_s, float32+float64", "ok" if not failures else f"FAIL ({failures})",
        f"{len(GRIDS)} grids ({kinds}) x 2 roundings x 2 dtypes, {n:,} values each; compiled and eager on {DEVICE}; "
        f"CPU float32 via the {'C kernel' if _kernel.get() else 'compiled path'}")
    return failures + float_grid_identity(n)


def float_grid_identity(n):
    """Float-format grids: finite values across each format's range (subnormals to near its max)."""
    gen = torch.Generator().manual_seed(1)
    failures = 0
    for fmt in FLOAT_FORMATS:
        g = Grid.float(fmt)
        top = torch.finfo(getattr(torch, fmt)).max
        mags = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-30, 0.99 * torch.log(torch.tensor(top)).item(),
                                                                     generator=gen))
        x = (mags * torch.sign(torch.randn(n, generator=gen, dtype=torch.float64))).float()
        x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-40, -1e-45])])
        xd = x.to(DEVICE)
        for rounding in ("nearest", "stochastic"):
            cpu = quantize(x, g, rounding, generator=9)
            dev = quantize(xd, g, rounding, generator=9).cpu()
            # the torch bit path itself, on the device (what CUDA runs; on CPU the C kernel answers quantize)
            ref = (_sr32(xd, fmt_info(fmt), resolve_key(9)) if rounding == "stochastic"
                   else xd.to(getattr(torch, fmt)).float()).cpu()
            for what, other in (("quantize", dev), ("torch bit path", ref)):
                if not torch.equal(cpu.view(torch.int32), other.view(torch.int32)):
                    failures += 1
                    bad = int((cpu.view(torch.int32) != other.view(torch.int32)).sum())
                    row(f"bit-identity {g!r} {rounding} ({what} on {DEVICE})", "FAIL", f"{bad} of {x.numel()} differ")
    row(f"CPU vs {DEVICE} bit-identity, float-format grids", "ok" if not failures else f"FAIL ({failures})",
        f"{', '.join(FLOAT_FORMATS)} x 2 roundings, {n:,} float32 values each (CPU: C kernel; {DEVICE}: quantize "
        "and the torch bit path)")
    return failures


def sr_speed(n, rounds):
    g, key = Grid.uniform(2**-4), resolve_key(1)
    x = torch.randn(n, device=DEVICE)
    t = time.perf_counter()
    quantize(x[:8], g, "stochastic", generator=1)
    sync()
    row(f"compile time (first {DEVICE} float32 call)", f"{time.perf_counter() - t:.1f} s")
    d = g.delta
    med = side_by_side({
        "clone": lambda: x.clone(),
        "SR": lambda: quantize(x, g, "stochastic", generator=1),
        "R": lambda: quantize(x, g),
        "naive": lambda: torch.floor(x / d + torch.rand_like(x)) * d,
        "eager": lambda: _eager(x, g, True, key),
    }, rounds)
    c = med["clone"]
    row(f"SR of {n:.0e} float32 vs clone()", f"{med['SR'] / c:.2f}x",
        f"(SR {med['SR'] * 1e3:.2f} ms, clone {c * 1e3:.2f} ms; R {med['R'] / c:.2f}x; naive one-liner "
        f"{med['naive'] / c:.2f}x; eager fallback {med['eager'] / c:.2f}x)")


def resnet_steps(rounds, steps, batch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(DEVICE)
    y = torch.randint(0, 10, (batch,), generator=g).to(DEVICE)
    runs = {}
    for m in ("adam", "bc", "sr", "r"):
        torch.manual_seed(0)
        model = build("resnet20", 10).to(DEVICE)
        base = torch.optim.Adam(model.parameters(), lr=0.01)
        scales = {id(p): p.detach().abs().mean().item() for _, p in named_conv_weights(model)}
        runs[m] = (model, base if m == "adam" else QuantizedOptimizer(
            base, m, lambda p: Grid.binary(scales[id(p)]), params=named_conv_weights(model)))

    def step(m):
        model, opt = runs[m]
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    med = side_by_side({m: (lambda m=m: step(m)) for m in runs}, rounds)
    a = med["adam"]
    row(f"ResNet-20 step (batch {batch}) vs ADAM", f"{a / steps * 1e3:.2f} ms/step ADAM",
        ", ".join(f"{name} {med[m] / a:.3f}x" for m, name in (("bc", "BC-ADAM"), ("sr", "SR-ADAM"), ("r", "R-ADAM"))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10**8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--identity-n", type=int, default=1_000_003, help="values per bit-identity case")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a dry run of the whole script on the CPU (checks the script, measures nothing useful)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check. "
              "Run it on a machine with a GPU and a CUDA build of PyTorch.")
        return 0
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (dry run)"
    print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"compiled path: {'on' if _compiled.get() else 'off'}", flush=True)
    failures = bit_identity(args.identity_n)
    sr_speed(args.n, args.rounds)
    resnet_steps(args.rounds, args.steps, args.batch)
    w = max(len(r[0]) for r in ROWS)
    print(f"\n{'check':{w}s}  result")
    for check, result, detail in ROWS:
        print(f"{check:{w}s}  {result}  {detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
