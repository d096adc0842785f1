"""Rounding part of a tensor -- a shard (FSDP, ``_quantize_from``: shifted keys) or a chunk
(``state_dtype``, ``quantize_slice``: the same shifted keys for uniform and binary grids, the float
formats' own start index for float grids) -- gives the bits that rounding the whole tensor gives to
that part."""
import pytest
import torch

from qtrain import Grid
from qtrain.rounding import _quantize_from, quantize_into, quantize_slice

CASES = [(g, dt) for g in (Grid.uniform(2**-4), Grid.uniform(0.1, bits=4), Grid.binary(0.5))
         for dt in (torch.float32, torch.float64)] + [(Grid.float("bfloat16"), torch.float32)]


@pytest.mark.parametrize("grid,dtype", CASES, ids=lambda v: str(v.kind if isinstance(v, Grid) else v))
@pytest.mark.parametrize("start", [1, 17, 3000])
def test_shard_key_and_chunk_start_agree_with_the_whole_tensor(grid, dtype, start):
    x = torch.randn(5000, generator=torch.Generator().manual_seed(start), dtype=dtype)
    key = 0x9E3779B97F4A7C15
    whole = quantize_into(x, None, grid, True, key)
    part = x[start:].clone()
    assert torch.equal(_quantize_from(part, None, grid, key, start), whole[start:])
    assert torch.equal(quantize_slice(part, grid, True, key, start), whole[start:])
