"""Integer codes and bit packing: exact round trips for every grid kind (hypothesis), refusals."""
import doctest

import pytest
import torch
from hypothesis import given, settings, strategies as st

import qtrain.codes as codes_mod
from qtrain import Grid, quantize
from qtrain.codes import code_dtype, decode, encode, pack, unpack

GRIDS = [Grid.binary(0.3), Grid.ternary(0.7), Grid.uniform(0.1, bits=1), Grid.uniform(0.1, bits=4),
         Grid.uniform(2**-5), Grid.uniform(0.37, bits=12), Grid.uniform(1e-3, bits=20),
         Grid.float("bfloat16"), Grid.float("float16"), Grid.float("float8_e4m3fn"), Grid.float("float8_e5m2")]


def _bits(t):
    return t.view(torch.int32)


@settings(max_examples=60, deadline=None)
@given(g=st.sampled_from(GRIDS), vals=st.lists(st.floats(-1e3, 1e3, width=32), min_size=0, max_size=40),
       key=st.integers(0, 2**32), stochastic=st.booleans())
def test_round_trip_is_exact(g, vals, key, stochastic):
    x = quantize(torch.tensor(vals, dtype=torch.float32), g, "stochastic" if stochastic else "nearest", generator=key)
    c = encode(x, g)
    assert c.dtype == code_dtype(g) and c.shape == x.shape
    assert torch.equal(_bits(decode(c, g)), _bits(x))
    data, meta = pack(c, g)
    assert len(data) == (x.numel() * meta["bits"] + 7) // 8
    assert torch.equal(unpack(data, x.numel(), meta, g), c.reshape(-1))


@pytest.mark.parametrize("g,dtype,bits", [(Grid.binary(1.0), torch.uint8, 1), (Grid.ternary(1.0), torch.int8, 2),
                                          (Grid.uniform(0.5, bits=8), torch.int8, 8),
                                          (Grid.uniform(0.5, bits=9), torch.int16, 9),
                                          (Grid.uniform(0.5, bits=17), torch.int32, 17),
                                          (Grid.float("float8_e5m2"), torch.int8, 8),
                                          (Grid.float("bfloat16"), torch.int16, 16)])
def test_code_widths(g, dtype, bits):
    assert code_dtype(g) == dtype
    assert pack(encode(quantize(torch.randn(100), g), g), g)[1]["bits"] == bits


def test_every_level_of_small_grids_and_every_float8_pattern():
    for g in (Grid.uniform(0.3, bits=5), Grid.ternary(2.0), Grid.binary(0.25)):
        lv = quantize(torch.tensor(g.levels()), g)  # levels() is float64 arithmetic; quantize gives the float32 levels
        assert len(set(lv.tolist())) == len(g.levels())
        assert torch.equal(decode(encode(lv, g), g), lv)
    for name in ("float8_e4m3fn", "float8_e5m2"):
        pat = torch.arange(-128, 128, dtype=torch.int8)
        vals = pat.view(getattr(torch, name)).float()
        ok = torch.isfinite(vals)
        g = Grid.float(name)
        assert torch.equal(encode(vals[ok], g), pat[ok]) and torch.equal(_bits(decode(pat[ok], g)), _bits(vals[ok]))


def test_binary_codes_are_0_and_1():
    assert encode(torch.tensor([-0.5, 0.5, 0.5]), Grid.binary(0.5)).tolist() == [0, 1, 1]


@pytest.mark.parametrize("g,x", [(Grid.uniform(0.1, bits=4), [0.1, 0.15]), (Grid.binary(1.0), [1.0, 0.0]),
                                 (Grid.ternary(1.0), [2.0]), (Grid.uniform(0.5, bits=2), [1.0]),
                                 (Grid.float("bfloat16"), [1.0 + 2**-10]), (Grid.uniform(0.5), [float("nan")]),
                                 (Grid.float("float16"), [float("inf")])])
def test_off_grid_values_are_refused_in_one_line(g, x):
    with pytest.raises(ValueError, match="not levels of") as e:
        encode(torch.tensor(x), g)
    assert "\n" not in str(e.value) and "quantize" in str(e.value)


def test_decode_refuses_codes_without_a_level():
    with pytest.raises(ValueError, match=r"outside \[-2, 1\]"):
        decode(torch.tensor([2]), Grid.uniform(0.5, bits=2))
    with pytest.raises(ValueError, match="NaN/inf"):
        decode(torch.tensor([0x7F], dtype=torch.int8), Grid.float("float8_e4m3fn"))
    with pytest.raises(ValueError, match="integer tensor"):
        decode(torch.tensor([1.0]), Grid.binary(1.0))
    with pytest.raises(ValueError, match="truncated"):
        unpack(b"\x00", 9, {"bits": 1, "offset": 0}, Grid.binary(1.0))


def test_grid_methods_delegate():
    g = Grid.float("float16")
    x = quantize(torch.randn(10), g)
    assert torch.equal(g.decode(g.encode(x)), x)


def test_docstring_examples():
    r = doctest.testmod(codes_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert r.attempted > 0 and r.failed == 0


def _reference_pack(v, b):
    """The layout as specified: bit j of code i is bit (i*b + j) % 8 of byte (i*b + j) // 8."""
    out = bytearray((len(v) * b + 7) // 8)
    for i, c in enumerate(v):
        for j in range(b):
            if (c >> j) & 1:
                out[(i * b + j) // 8] |= 1 << ((i * b + j) % 8)
    return bytes(out)


@pytest.mark.parametrize("g", [Grid.binary(0.3), Grid.ternary(0.7), Grid.uniform(0.1, bits=3), Grid.uniform(0.37, bits=12),
                               Grid.uniform(2**-5), Grid.float("bfloat16"), Grid.float("float8_e5m2")])
def test_chunked_pack_keeps_the_layout(monkeypatch, g):
    monkeypatch.setattr(codes_mod, "CHUNK", 16)  # many chunks, a short last one
    x = quantize(torch.randn(203) * 2, g, "stochastic", generator=4)
    c = encode(x, g)
    data, meta = pack(c, g)
    v = codes_mod._unsigned(c, g, meta["offset"])
    assert data == _reference_pack(v.tolist(), meta["bits"])
    packed, meta2 = codes_mod.pack_values(x, g)
    assert meta2 == meta and bytes(packed.numpy()) == data
    assert torch.equal(unpack(data, x.numel(), meta, g), c) and torch.equal(unpack(packed, x.numel(), meta, g), c)


@pytest.mark.parametrize("g", [Grid.uniform(0.1, bits=4), Grid.uniform(0.3), Grid.ternary(0.1), Grid.binary(0.1)])
def test_float64_levels_round_trip(g):
    x = quantize(torch.randn(500, dtype=torch.float64), g, "stochastic", generator=2)
    c = encode(x, g)
    assert torch.equal(decode(c, g, torch.float64), x)
    if g.kind != "binary" and g.delta == 0.1:  # float64 levels are not the float32 ones
        assert not torch.equal(decode(c, g).double(), x)
    with pytest.raises(ValueError, match="not levels of"):
        encode(x + 1e-12, g)


def test_chunked_encode_names_the_first_bad_entry(monkeypatch):
    monkeypatch.setattr(codes_mod, "CHUNK", 8)
    x = torch.zeros(40)
    x[29] = 0.3
    with pytest.raises(ValueError, match="at flat index 29") as e:
        codes_mod.pack_values(x, Grid.uniform(0.25, bits=3))
    assert "\n" not in str(e.value)
