"""Peak memory of packing and exporting quantized weights, each case in a fresh process (issue 19,
point 3): goal, peak growth <= 2x the packed output + one chunk's temporaries.

Cases, on 16.8M (4096 x 4096) 4-bit weights (8.4 MB packed) and the same number of ternary
weights (2 bits, 4.2 MB):

* ``pack_values`` -- encode + pack chunk by chunk into a uint8 tensor (what export uses);
* ``pack(encode(x))`` -- the public two-step path: the int8 codes (16.8 MB) exist, then packed;
* ``export.save`` and ``export.load`` of a model holding that weight (a float32 model of 67 MB:
  the save streams its tensors to the file; the load reads tensor by tensor).

Each case reports the growth of ``VmHWM`` over ``VmRSS`` just before the call (the HWM reset via
``/proc/self/clear_refs``), in MiB, and the ratio to the packed bytes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_export_memory.py
"""
import os
import subprocess
import sys
import tempfile

import torch

from qtrain import Grid, quantize
from qtrain.codes import CHUNK

N = 4096
GRIDS = {"4-bit": Grid.uniform(2**-4, bits=4), "ternary": Grid.ternary(0.05)}
CASES = ("pack_values", "pack(encode)", "export.save", "export.load")


def _status(field):
    with open("/proc/self/status") as fh:
        return int([line for line in fh if line.startswith(field)][0].split()[1]) * 1024


def child(case, grid_name):
    from qtrain import export
    from qtrain.codes import encode, pack, pack_values

    g = GRIDS[grid_name]
    lin = torch.nn.Linear(N, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(quantize(torch.randn(N, N) * 0.05, g))
    path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    if case == "export.load":
        export.save_with_grids(lin, {"weight": g}, path)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status("VmRSS")
    if case == "pack_values":
        packed = pack_values(lin.weight, g)[0].numel()
    elif case == "pack(encode)":
        packed = len(pack(encode(lin.weight, g), g)[0])
    elif case == "export.save":
        packed = export.save_with_grids(lin, {"weight": g}, path)["packed_bytes"]
    else:
        export.load(lin, path)
        packed = N * N * (4 if grid_name == "4-bit" else 2) // 8
    print(_status("VmHWM") - before, packed)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    print(f"{N}x{N} weights ({N * N / 1e6:.1f}M); chunk {CHUNK} codes; fresh process each; peak growth in MiB")
    print(f"{'grid':8s} {'case':14s} {'packed MiB':>11s} {'peak growth':>12s} {'x packed':>9s}  goal <= 2x + chunk")
    for grid_name in GRIDS:
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--child", case, grid_name], capture_output=True, text=True,
                                 check=True, env=env)
            grew, packed = map(int, out.stdout.split())
            print(f"{grid_name:8s} {case:14s} {packed / 2**20:11.2f} {grew / 2**20:12.2f} {grew / packed:9.2f}")


if __name__ == "__main__":
    main()
