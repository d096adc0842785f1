"""What the paper scale costs: training FLOPs of every Table 1 cell, counted with
torch.utils.flop_counter on one forward+backward, times the images the preset trains on.
GPU-hours are then shown for an assumed *effective* throughput (small CIFAR nets rarely
reach a GPU's peak), so read them as a range, not a measurement.

    .venv/bin/python benchmarks/paper_cost.py [--tflops 10 40]
"""
import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qtrain.experiments.table1 import cell_config, cells
from qtrain.models import build

TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}


def train_flops_per_image(model_name, classes, size):
    model = build(model_name, classes, image_size=size)
    x = torch.randn(2, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    return fc.get_total_flops() / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflops", type=float, nargs="+", default=[10.0, 40.0], help="assumed effective TFLOP/s")
    args = ap.parse_args()
    per_image, total = {}, 0.0
    print(f"{'cell':32s} {'GFLOP/img':>10s} {'PFLOP':>8s} " + " ".join(f"{'h@' + format(t, 'g') + 'TF':>9s}" for t in args.tflops))
    for name, path in cells("paper").items():
        cfg = cell_config(path)
        key = (cfg.model, cfg.data)
        if key not in per_image:
            classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[cfg.data]
            per_image[key] = train_flops_per_image(cfg.model, classes, 224 if cfg.data == "imagenet" else 32)
        flops = per_image[key] * TRAIN_IMAGES[cfg.data] * cfg.epochs
        total += flops
        hours = " ".join(f"{flops / (t * 1e12) / 3600:9.2f}" for t in args.tflops)
        print(f"{name:32s} {per_image[key] / 1e9:10.3f} {flops / 1e15:8.1f} {hours}")
    print(f"{'all 30 cells':32s} {'':10s} {total / 1e15:8.1f} " + " ".join(f"{total / (t * 1e12) / 3600:9.1f}" for t in args.tflops))


if __name__ == "__main__":
    main()
