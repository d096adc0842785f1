"""Compact export: bit-exact reload, the size formula, a run's export giving its test error."""
import doctest
import json
import struct

import pytest
import torch
from torch import nn

import qtrain.export as export
from qtrain import Grid, QuantizedOptimizer, conv_weights
from qtrain.cli import main as cli
from qtrain.train import TrainConfig, run


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.LazyLinear(4))


@pytest.mark.parametrize("grid,bits", [(Grid.binary(0.05), 1), (Grid.ternary(0.05), 2), (Grid.uniform(2**-6, bits=5), 5),
                                       (Grid.uniform(2**-8), None), (Grid.float("bfloat16"), 16),
                                       (Grid.float("float8_e4m3fn"), 8)])
def test_save_load_is_bit_exact_and_size_is_packed_bits_plus_floats(tmp_path, grid, bits):
    net = _net()
    net(torch.zeros(1, 3, 8, 8))
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters()), "sr", grid, params=conv_weights(net), seed=1)
    path = tmp_path / "m.safetensors"
    info = export.save(net, opt, path)
    fresh = _net()
    fresh(torch.zeros(1, 3, 8, 8))
    meta = export.load(fresh, path)
    for (k, a), b in zip(net.state_dict().items(), fresh.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert set(meta) == {"0.weight", "2.weight"} and all(m["grid"] == grid for m in meta.values())
    n_q = sum(p.numel() for p in conv_weights(net))
    if bits is not None:
        assert info["packed_bytes"] <= (n_q * bits) // 8 + 2
    floats = sum(t.numel() * t.element_size() for k, t in net.state_dict().items() if k not in meta)
    assert info["float_bytes"] == floats and path.stat().st_size == info["bytes"]
    assert info["bytes"] <= 1.1 * (info["packed_bytes"] + floats) + 4096  # within 10% plus a small header
    assert info["bytes"] < export.float_size(net)


def test_file_is_a_plain_safetensors_layout(tmp_path):
    net = _net()
    net(torch.zeros(1, 3, 8, 8))
    path = tmp_path / "m.safetensors"
    export.save(net, QuantizedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), "r", Grid.binary(0.1),
                                        params=conv_weights(net)), path)
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    assert n % 8 == 0 and header["0.weight"]["dtype"] == "U8" and header["1.weight"]["dtype"] == "F32"
    ends = sorted(h["data_offsets"] for k, h in header.items() if k != "__metadata__")
    assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:])) and ends[-1][1] == len(blob) - 8 - n


def test_load_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        export.load(_net(), bad)
    with pytest.raises(FileNotFoundError, match="qtrain export"):
        export.load(_net(), tmp_path / "missing.safetensors")
    net = _net()
    net(torch.zeros(1, 3, 8, 8))
    export.save(net, None, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        export.load(nn.Linear(2, 2), tmp_path / "f.safetensors")


def test_exported_run_reloads_to_the_runs_test_error(tmp_path):
    cfg = TrainConfig(data="digits", model="smallcnn", method="sr", grid="binary", epochs=1, batch_size=64,
                      train_subset=512, test_subset=200, progress=False)
    summary = run(cfg, tmp_path)
    rc = cli(["export", str(tmp_path), "--out", str(tmp_path / "m.safetensors"), "--evaluate"])
    assert rc == 0
    info = json.loads((tmp_path / "summary.json").read_text())["export"]
    assert info["test_error"] == summary["test_error"] and info["bit_identical"]
    assert info["bytes"] < info["float32_bytes"] / 3 < info["checkpoint_bytes"]
    assert cli(["export", str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2


def test_docstring_examples():
    r = doctest.testmod(export, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert r.attempted > 0 and r.failed == 0


def test_float64_model_exports_its_float64_levels(tmp_path):
    def net64():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 2)).double()

    net = net64()
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters(), lr=0.01), "sr", Grid.uniform(0.1, bits=4),
                             params=[net[0].weight, net[2].weight], seed=1)
    x = torch.randn(16, 20, dtype=torch.float64)
    net(x).square().mean().backward()
    opt.step()
    w = net[0].weight
    assert not torch.equal(w, w.float().double())  # float64 levels k*0.1, not float32 ones
    info = export.save(net, opt, tmp_path / "m.safetensors")
    assert info["packed_bytes"] == (600 + 60) * 4 // 8
    fresh = net64()
    export.load(fresh, tmp_path / "m.safetensors")
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b)


_PEAK_CHILD = r"""
import sys, torch
from qtrain import Grid, quantize
from qtrain.codes import pack_values
n = int(sys.argv[1])
g = Grid.uniform(2**-4, bits=4)
x = quantize(torch.randn(n) * 0.2, g)
def status(field):
    return int([l for l in open("/proc/self/status") if l.startswith(field)][0].split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = status("VmRSS")
data, meta = pack_values(x, g)
print(status("VmHWM") - before, data.numel())
"""


def test_pack_peak_memory_is_the_output_plus_a_chunk(tmp_path):
    """A fresh process packs 4M 4-bit weights (2 MB packed): its peak grows by at most twice the
    packed bytes plus 8 MiB (one chunk's temporaries, with slack); the int64 bit matrix of the old
    pack took n * bits * 8 = 128 MB."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(1 << 22)], capture_output=True, text=True, env=env,
                         check=True)
    grew, packed = map(int, out.stdout.split())
    assert packed == (1 << 22) // 2
    assert grew <= 2 * packed + 8 * 2**20, (grew, packed)
