"""Peak memory of low-precision training and bytes per parameter, each configuration in a fresh
process (issue 19, points 1 and 2).

Model: an MLP with two 2048x2048 weights (no biases), batch 256, 4 training steps (forward,
backward, step). Per configuration, a fresh process prints

* ``VmHWM`` (peak resident memory of the whole process, MiB) -- the goal compares it side by side:
  qtrain SR onto bfloat16 weights with ``state_dtype=torch.bfloat16`` <= plain bfloat16
  ``torch.optim.AdamW`` + 16 MiB;
* bytes per parameter by inspecting the tensors after the last step (weights + gradients +
  the base optimizer's state + BC's latents), and
* bytes per parameter from memory: the slope of ``VmHWM`` between the same run at width 1024
  and 2048 (4x fewer parameters), (VmHWM(2048) - VmHWM(1024)) / (parameters(2048) -
  parameters(1024)); fixed costs (torch's code pages, the allocator) cancel, the step's
  temporaries and the activations (a small share here) count.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lowprec_memory.py [--repeats 3]
"""
import argparse
import os
import statistics
import subprocess
import sys

import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer
from qtrain.dynamic import DynamicGrid

N, BATCH, STEPS = 2048, 256, 4
BF16 = torch.bfloat16
# name: (label, parameter dtype, method, grid, state_dtype); None method = the torch optimizer alone
CONFIGS = {
    "adam32": ("float32 Adam (torch)", torch.float32, None, None, None),
    "adamw16": ("plain bf16 AdamW (torch)", BF16, None, None, None),
    "sr16-state32": ("qtrain SR, bf16 weights + fp32 state", BF16, "sr", Grid.float("bfloat16"), None),
    "sr16-state16": ("qtrain SR, bf16 weights + bf16 state", BF16, "sr", Grid.float("bfloat16"), BF16),
    "sr8-state16": ("qtrain SR, fp8 (e4m3) weights + bf16 state", BF16, "sr", Grid.float("float8_e4m3fn"), BF16),
    "bc16-state16": ("qtrain BC, bf16 weights, fp32 latents, bf16 state", BF16, "bc", Grid.float("bfloat16"), BF16),
    "bc3-state16": ("qtrain BC ternary (absmean), fp32 latents, bf16 state", BF16, "bc", DynamicGrid.ternary(), BF16),
}
# bits per weight of the exported (bit-packed) weights
PACKED = {"adam32": 32, "adamw16": 16, "sr16-state32": 16, "sr16-state16": 16, "sr8-state16": 8, "bc16-state16": 16,
          "bc3-state16": 2}


def _status(field):
    with open("/proc/self/status") as fh:
        return int([line for line in fh if line.startswith(field)][0].split()[1]) * 1024


def child(name, N):
    _, dtype, method, grid, state_dtype = CONFIGS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, N, generator=g).to(dtype)
    model = nn.Sequential(nn.Linear(N, N, bias=False, dtype=dtype), nn.ReLU(), nn.Linear(N, N, bias=False, dtype=dtype))
    base = (torch.optim.Adam if dtype == torch.float32 else torch.optim.AdamW)(model.parameters(), lr=1e-3)
    opt = base if method is None else QuantizedOptimizer(base, method, grid, seed=0, state_dtype=state_dtype)
    for _ in range(STEPS):
        opt.zero_grad()
        model(x).float().square().mean().backward()
        opt.step()
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    tensors = params + [p.grad for p in params] + [t for st in base.state.values() for t in st.values()
                                                   if isinstance(t, torch.Tensor) and t.numel() > 1]
    tensors += list(getattr(opt, "latents", []))
    held = sum(t.numel() * t.element_size() for t in tensors)
    hwm = _status("VmHWM")
    print(hwm / 2**20, held / n, n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child")
    ap.add_argument("--width", type=int, default=N)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.width)
    runs = {k: [] for k in CONFIGS}
    small = {k: [] for k in CONFIGS}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for _ in range(args.repeats):
        for k in CONFIGS:  # interleaved: every configuration sees the same machine state
            for width, into in ((N, runs), (N // 2, small)):
                out = subprocess.run([sys.executable, __file__, "--child", k, "--width", str(width)], capture_output=True,
                                     text=True, check=True, env=env)
                into[k].append([float(v) for v in out.stdout.split()])
    med = {k: [statistics.median(r[j] for r in v) for j in range(3)] for k, v in runs.items()}
    for k, v in small.items():  # bytes per parameter: the slope of VmHWM
        hwm_small, n_small = statistics.median(r[0] for r in v), v[0][2]
        med[k][2] = (med[k][0] - hwm_small) * 2**20 / (med[k][2] - n_small)
    ref = med["adamw16"][0]
    print(f"MLP 2 x {N}x{N} (no bias), batch {BATCH}, {STEPS} steps; fresh process each, median of {args.repeats}; "
          f"VmHWM in MiB")
    print(f"{'configuration':55s} {'VmHWM':>8s} {'vs bf16 AdamW':>14s} {'B/param held':>13s} {'B/param slope':>14s}"
          f" {'export bits':>12s}")
    for k, (label, *_rest) in CONFIGS.items():
        hwm, held, delta = med[k]
        print(f"{label:55s} {hwm:8.1f} {hwm - ref:+14.1f} {held:13.2f} {delta:14.2f} {PACKED[k]:12d}")
    over = med["sr16-state16"][0] - ref
    print(f"\ngoal: qtrain SR + bf16 state <= plain bf16 AdamW + 16 MiB: {over:+.1f} MiB -> "
          f"{'met' if over <= 16 else 'NOT met'}")


if __name__ == "__main__":
    main()
