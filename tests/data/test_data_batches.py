"""Batched augmentation and the deterministic, rank-aware batches() iterator."""
import pytest
import torch
import torch.nn.functional as F

from qtrain.data import InMemoryDataset, batches, load_dataset, num_batches
from qtrain.data.augment import (apply_pad_crop_flip, pad_crop_flip, pad_crop_flip_reference,
                                 sample_pad_crop_flip)
from qtrain.data.base import channel_stats


def fake_cifar(n_train=50, n_test=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    tx = torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8)
    ex = torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    ty = torch.randint(0, 10, (n_train,), generator=g)
    ey = torch.randint(0, 10, (n_test,), generator=g)
    mean, std = channel_stats(tx)
    return InMemoryDataset("cifar10", tx, ty, ex, ey, 10, mean, std, augment=True)


# ---------------------------------------------------------------- augmentation

@pytest.mark.parametrize("pad", [0, 1, 4])
def test_pad_crop_flip_matches_loop_reference(pad):
    x = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    dy, dx, flip = sample_pad_crop_flip(37, g, pad)
    assert int(dy.max()) <= 2 * pad and int(dx.min()) >= 0 and set(flip.tolist()) <= {0, 1}
    y = apply_pad_crop_flip(x, dy, dx, flip, pad)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(y, pad_crop_flip_reference(x, dy, dx, flip, pad))


def test_pad_crop_flip_semantics():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    dy, dx, flip = torch.tensor([4, 0]), torch.tensor([4, 8]), torch.tensor([0, 1])
    y = apply_pad_crop_flip(x, dy, dx, flip, pad=4)
    assert torch.equal(y[0], x[0])                   # centre crop, no flip = identity
    assert y[1].sum() == 0                           # crop fully in the zero padding
    dy, dx = torch.tensor([4, 5]), torch.tensor([4, 4])
    y = apply_pad_crop_flip(x, dy, dx, torch.tensor([1, 0]), pad=4)
    assert torch.equal(y[0], x[0].flip(-1))
    assert torch.equal(y[1, :, :3], x[1, :, 1:]) and y[1, :, 3].sum() == 0  # shifted up by 1


def test_pad_crop_flip_uses_only_given_generator():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    state = torch.random.get_rng_state()
    a = pad_crop_flip(x, torch.Generator().manual_seed(5))
    b = pad_crop_flip(x, torch.Generator().manual_seed(5))
    c = pad_crop_flip(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())


def test_pad_crop_flip_distribution():
    g = torch.Generator().manual_seed(0)
    dy, dx, flip = sample_pad_crop_flip(20000, g, 4)
    assert torch.bincount(dy, minlength=9).min() > 2000 and abs(flip.float().mean() - 0.5) < 0.02


# ---------------------------------------------------------------- batches()

def collect(ds, split, b, **kw):
    kw.setdefault("shuffle", True)
    kw.setdefault("augment", True)
    kw.setdefault("seed", 1)
    kw.setdefault("epoch", 0)
    return list(batches(ds, split, b, **kw))


def test_num_batches_and_drop_last():
    ds = fake_cifar(50, 23)
    assert num_batches(ds, "train", 16) == 3 and num_batches(ds, "test", 16) == 2
    assert num_batches(ds, "train", 16, drop_last=False) == 4
    assert num_batches(ds, "test", 16, drop_last=True) == 1
    assert [len(y) for _, y in collect(ds, "train", 16)] == [16, 16, 16]
    assert [len(y) for _, y in collect(ds, "test", 16, shuffle=False)] == [16, 7]
    with pytest.raises(ValueError, match="split"):
        num_batches(ds, "val", 16)


def test_deterministic_replay_and_epoch_dependence():
    ds = fake_cifar()
    state = torch.random.get_rng_state()
    a, b = collect(ds, "train", 16), collect(ds, "train", 16)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG never used
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = collect(ds, "train", 16, epoch=1)
    d = collect(ds, "train", 16, seed=2)
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][1], d[0][1])


def test_test_split_in_order_normalised_no_augment():
    ds = fake_cifar()
    out = collect(ds, "test", 10, shuffle=False, augment=False)
    x = torch.cat([b[0] for b in out])
    y = torch.cat([b[1] for b in out])
    assert torch.equal(y, ds.test_y) and x.dtype == torch.float32
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    ref = (ds.test_x.float() / 255 - mean) / std
    assert torch.allclose(x, ref, atol=1e-5)


def test_shuffled_epoch_is_a_permutation_with_augmentation_applied():
    ds = fake_cifar(48)
    out = collect(ds, "train", 16)
    y = torch.cat([b[1] for b in out])
    assert sorted(y.tolist()) == sorted(ds.train_y.tolist())
    x = torch.cat([b[0] for b in out])
    plain = torch.cat([b[0] for b in collect(ds, "train", 16, augment=False)])
    assert not torch.equal(x, plain)
    # augmentation = pad_crop_flip with the batch's derived generator, then normalise
    from qtrain.data.loader import derive_seed, epoch_order, normalize
    idx = epoch_order(48, True, 1, 0)[:16]
    aug = pad_crop_flip(ds.train_x[idx], torch.Generator().manual_seed(derive_seed(1, 0, 0)))
    assert torch.equal(out[0][0], normalize(aug, ds.mean, ds.std))


@pytest.mark.parametrize("split,b,ws", [("train", 16, 4), ("train", 12, 2), ("test", 8, 4)])
def test_ranks_partition_the_global_batch(split, b, ws):
    ds = fake_cifar(50, 23)
    single = collect(ds, split, b)
    per_rank = [collect(ds, split, b, rank=r, world_size=ws) for r in range(ws)]
    assert all(len(p) == len(single) for p in per_rank)  # same number of steps on every rank
    for k, (x, y) in enumerate(single):
        xs = [per_rank[r][k][0] for r in range(ws)]
        if len(y) == b:
            assert all(len(t) == b // ws for t in xs)
        assert torch.equal(torch.cat(xs), x)
        assert torch.equal(torch.cat([per_rank[r][k][1] for r in range(ws)]), y)


def test_batch_size_must_divide_by_world_size():
    ds = fake_cifar()
    with pytest.raises(ValueError, match="multiple of world_size"):
        batches(ds, "train", 10, shuffle=True, augment=True, seed=0, epoch=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        batches(ds, "train", 8, shuffle=True, augment=True, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="split"):
        batches(ds, "valid", 8, shuffle=False, augment=False, seed=0, epoch=0)


def test_no_augmentation_for_digits_even_if_asked():
    ds = load_dataset("digits")
    a = collect(ds, "train", 64, augment=True)
    b = collect(ds, "train", 64, augment=False)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert a[0][0].shape == (64, 1, 8, 8)


def test_device_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ds = fake_cifar()
    cpu = collect(ds, "train", 16)
    gpu = collect(ds, "train", 16, device="cuda")
    assert gpu[0][0].is_cuda and gpu[0][1].is_cuda
    for (x1, y1), (x2, y2) in zip(cpu, gpu):
        assert torch.allclose(x1, x2.cpu(), atol=1e-6) and torch.equal(y1, y2.cpu())
