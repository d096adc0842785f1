"""Throughput of the CIFAR input pipeline: batched tensors vs a per-image Python loop.

Measures, in one run and on the same data:

* ``batches()``: shuffle + gather + pad-4 crop + flip + normalise to float32 (the full
  pipeline the trainer consumes), batch 128;
* ``pad_crop_flip`` alone (batched ``uint8`` augmentation);
* the per-image baseline: a Python loop of pad / crop / flip per image, then normalise.

Prints images/s and the ratio to the 20,000 images/s goal.

Usage::

    python benchmarks/bench_augment.py                       # random CIFAR-shaped data
    python benchmarks/bench_augment.py --data-dir DATA_DIR   # real CIFAR-10
"""
from __future__ import annotations

import argparse
import time

import torch

from qtrain.data import InMemoryDataset, batches, load_dataset
from qtrain.data.augment import pad_crop_flip, pad_crop_flip_reference, sample_pad_crop_flip
from qtrain.data.base import channel_stats
from qtrain.data.loader import normalize

GOAL = 20_000


def _dataset(data_dir):
    if data_dir:
        return load_dataset("cifar10", data_dir), "CIFAR-10 from " + data_dir
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50_000, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (50_000,), generator=g)
    mean, std = channel_stats(x[:1000])
    return (InMemoryDataset("cifar10", x, y, x[:1000], y[:1000], 10, mean, std, True),
            "random CIFAR-shaped uint8 (50000x3x32x32)")


def _rate(fn, n_images: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder with CIFAR-10 (else random data)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=50_000, help="images per batched timing")
    ap.add_argument("--loop-images", type=int, default=5_000, help="images for the loop baseline")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds, what = _dataset(args.data_dir)
    b, n = args.batch_size, min(args.images, ds.num_examples("train"))
    sub = InMemoryDataset(ds.name, ds.train_x[:n], ds.train_y[:n], ds.test_x, ds.test_y,
                          ds.num_classes, ds.mean, ds.std, True)
    n_used = (n // b) * b

    def pipeline():
        for x, _ in batches(sub, "train", b, shuffle=True, augment=True, seed=0, epoch=0):
            pass

    def augment_only():
        g = torch.Generator().manual_seed(0)
        for i in range(0, n_used, b):
            pad_crop_flip(ds.train_x[i:i + b], g)

    m = min(args.loop_images, n)
    g = torch.Generator().manual_seed(0)
    params = sample_pad_crop_flip(m, g)
    out = torch.empty_like(ds.train_x[:m])

    def loop():
        for i in range(0, m, b):
            sl = slice(i, min(i + b, m))
            pad_crop_flip_reference(ds.train_x[sl], *(p[sl] for p in params), out=out[sl])
            normalize(out[sl], ds.mean, ds.std)

    pipeline()  # warm-up
    rows = [
        ("batches(): shuffle+augment+normalise", _rate(pipeline, n_used, args.repeats)),
        ("pad_crop_flip (uint8, batched)", _rate(augment_only, n_used, args.repeats)),
        ("per-image Python loop + normalise", _rate(loop, m, args.repeats)),
    ]
    print(f"data: {what}; batch {b}; torch threads {torch.get_num_threads()}; "
          f"best of {args.repeats}")
    print(f"{'pipeline':40s} {'images/s':>12s} {'x goal':>8s} {'x loop':>8s}")
    for name, r in rows:
        print(f"{name:40s} {r:12,.0f} {r / GOAL:8.2f} {r / rows[2][1]:8.1f}")
    print(f"goal: {GOAL:,} augmented CIFAR images/s -> "
          f"{'MET' if rows[0][1] >= GOAL else 'NOT MET'} ({rows[0][1] / GOAL:.1f}x)")


if __name__ == "__main__":
    main()
