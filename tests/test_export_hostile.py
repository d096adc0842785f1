"""An export checks itself: a SHA-256 of the data in the header (still a valid safetensors file),
and a header that is validated before any tensor is built; every refusal is one line naming the file."""
import json
import struct

import pytest
import torch
from torch import nn

import qtrain.export as export
from qtrain import Grid, QuantizedOptimizer, conv_weights


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.fixture
def saved(tmp_path):
    net = _net()
    opt = QuantizedOptimizer(torch.optim.Adam(net.parameters()), "sr", Grid.binary(0.1), params=conv_weights(net))
    path = tmp_path / "m.safetensors"
    export.save(net, opt, path)
    return net, path


def split(path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(path, header, data, raw_header=None):
    head = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((-len(head)) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def refused(path, *needles):
    with pytest.raises(ValueError) as e:
        export.load(_net(), path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_digest_is_in_the_metadata_and_every_flipped_data_byte_is_refused(saved):
    net, path = saved
    header, data = split(path)
    assert len(header["__metadata__"]["qtrain.sha256"]) == 64  # hex text: metadata stays str -> str
    good = path.read_bytes()
    start = len(good) - len(data)
    for i in range(0, len(data), max(1, len(data) // 40)):
        bad = bytearray(good)
        bad[start + i] ^= 0x01
        path.write_bytes(bytes(bad))
        refused(path, "SHA-256")
    path.write_bytes(good)
    fresh = _net()
    export.load(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))


def _edit(path, change):
    header, data = split(path)
    new = change(header, data)
    data = new if isinstance(new, bytes) else data
    join(path, header, data)


def _entry(header, dtype="F32"):
    return next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == dtype)


@pytest.mark.parametrize("change,needle", [
    (lambda h, d: h[_entry(h)].update(dtype="I32"), "model's is torch.float32"),           # F32 bytes declared I32
    (lambda h, d: h[_entry(h)].update(dtype="F16"), "holds"),                             # bytes no longer match
    (lambda h, d: h[_entry(h)].update(dtype="F99"), "not one of"),
    (lambda h, d: h[_entry(h)].update(shape=[-1]), "shape"),
    (lambda h, d: h[_entry(h)].update(data_offsets=[0, 10**12]), "holds"),
    (lambda h, d: h[_entry(h)].update(extra=1), "exactly dtype"),
    (lambda h, d: h["__metadata__"].update({"qtrain.x": 5}), "text to text"),
    (lambda h, d: d + b"\0" * 8, "indexes"),                                              # unindexed bytes
    (lambda h, d: d[:-4], "indexes"),
])
def test_bad_headers_are_refused(saved, change, needle):
    _, path = saved
    _edit(path, change)
    refused(path, needle)


def test_overlapping_ranges_and_duplicate_keys(saved):
    _, path = saved
    header, data = split(path)
    names = [k for k, v in header.items() if k != "__metadata__"]
    # two tensors of the same size pointing at the same bytes, the freed range cut from the data
    sizes = {}
    for k in names:
        b, e = header[k]["data_offsets"]
        sizes.setdefault(e - b, []).append(k)
    a, b = next(v for v in sizes.values() if len(v) >= 2)[:2]
    h2 = json.loads(json.dumps(header))
    h2[b]["data_offsets"] = list(h2[a]["data_offsets"])
    join(path, h2, data)
    refused(path, "overlaps")
    raw = json.dumps(header, separators=(",", ":")).encode()
    first = f'"{a}":'.encode()
    entry = raw[raw.index(first):raw.index(b"}", raw.index(first)) + 1]
    join(path, None, data, raw_header=raw[:-1] + b"," + entry + b"}")  # the same name twice
    refused(path, "duplicate key")


@pytest.mark.parametrize("meta", [
    lambda q: dict(q, dtype="torch.int64"), lambda q: dict(q, grid="x"), lambda q: dict(q, shape="x"),
    lambda q: dict(q, bits=None), lambda q: [q], lambda q: dict(q, grid={"kind": "nope"}),
    lambda q: {k: v for k, v in q.items() if k != "grid"},
])
def test_malformed_packed_metadata_is_one_line(saved, meta):
    _, path = saved
    header, data = split(path)
    key = next(k for k in header["__metadata__"] if k.startswith("qtrain.") and k != "qtrain.sha256")
    header["__metadata__"][key] = json.dumps(meta(json.loads(header["__metadata__"][key])))
    join(path, header, data)  # the digest covers the data only: it still matches
    refused(path, "malformed")


def test_metadata_without_digest_is_refused(saved):
    _, path = saved
    _edit(path, lambda h, d: h["__metadata__"].pop("qtrain.sha256"))
    refused(path, "no data digest")


def test_the_official_reader_loads_the_file(saved):
    """Only when the safetensors package is installed (it is not a dependency)."""
    st = pytest.importorskip("safetensors.torch")
    net, path = saved
    tensors = st.load_file(str(path))
    assert torch.equal(tensors["1.running_mean"], net.state_dict()["1.running_mean"])
