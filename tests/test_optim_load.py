"""load_state_dict checks the whole saved state before it changes anything: a refused load leaves
the optimizer (grids, seed, step, latents, base state) and the model's weights exactly as they were."""
import copy

import pytest
import torch
from torch import nn

from qtrain import Grid, QuantizedOptimizer, named_conv_weights


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3))


def trained(method, seed):
    m = net(seed)
    opt = QuantizedOptimizer(torch.optim.Adam(m.parameters(), lr=0.01), method, Grid.binary(0.1),
                             params=named_conv_weights(m), seed=seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(torch.randn(8, 2, 5, 5, generator=g)), torch.randint(0, 3, (8,), generator=g)).backward()
        opt.step()
    return m, opt


def snapshot(m, opt):
    sd = opt.state_dict()
    return copy.deepcopy((sd, m.state_dict(), [t.clone() for t in opt.latents], opt.seed, opt.step_count, list(opt.grids)))


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def _latent(i, value):
    def change(sd):
        sd["qtrain"]["latents"][i] = value(sd["qtrain"]["latents"][i])
    return change


def _state(key, value):
    def change(sd):
        first = next(iter(sd["state"]))
        sd["state"][first][key] = value(sd["state"][first][key])
    return change


@pytest.mark.parametrize("method,change,needle", [
    ("bc", _latent(0, lambda t: torch.tensor(0.5)), "expected floating point of shape"),          # scalar: no broadcast
    ("bc", _latent(1, lambda t: t[:2]), "expected floating point of shape"),                      # after seed/step used to change
    ("bc", _latent(1, lambda t: t.fill_(float("nan"))), "NaN"),
    ("bc", _latent(0, lambda t: t.to(torch.int32)), "torch.int32"),
    ("bc", _latent(0, lambda t: [1.0]), "list"),
    ("sr", _state("exp_avg", lambda t: t.reshape(-1)), "exp_avg"),
    ("sr", _state("exp_avg_sq", lambda t: t.fill_(float("inf"))), "NaN or inf"),
    ("sr", lambda sd: sd["qtrain"].update(grids=[{"kind": "binary"}, {}]), "grid"),
    ("sr", lambda sd: sd["qtrain"].update(step=-1), "out of range"),
    ("sr", lambda sd: sd["qtrain"].update(seed="0"), "seed"),
    ("sr", lambda sd: sd["qtrain"].update(shapes=[[4, 2, 3, 3], [1]]), "shape"),
    ("sr", lambda sd: sd.update(qtrain=[1]), "not a mapping"),
    ("sr", lambda sd: sd.pop("state"), "'state'"),
])
def test_a_refused_load_changes_nothing(method, change, needle):
    m, opt = trained(method, seed=1)
    before = snapshot(m, opt)
    _, other = trained(method, seed=2)
    bad = copy.deepcopy(other.state_dict())
    change(bad)
    with pytest.raises(ValueError, match=needle) as e:
        opt.load_state_dict(bad)
    assert "\n" not in str(e.value)
    assert same(before, snapshot(m, opt))


def test_a_good_load_still_restores_everything():
    m, opt = trained("bc", seed=1)
    _, other = trained("bc", seed=2)
    opt.load_state_dict(other.state_dict())
    assert opt.seed == 2 and opt.step_count == 3
    assert all(torch.equal(a, b) for a, b in zip(opt.latents, other.latents))
