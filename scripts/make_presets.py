"""Write the Table 1 presets (src/qtrain/experiments/presets/<scale>/<column>.<row>.yaml).

The YAML files are the source of truth that `qtrain table1` and `qtrain train --config` read;
this script documents how they were made and regenerates them after a protocol change.

    .venv/bin/python scripts/make_presets.py
"""
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "src" / "qtrain" / "experiments" / "presets"
METHODS = {  # row: (method, big batch?)
    "adam": ("float", False), "bc-adam": ("bc", False), "big-sr-adam": ("sr", True),
    "sr-adam": ("sr", False), "r-adam": ("r", False),
}
# Binary conv weights ±s with s = the layer's mean |w| at initialisation
# [choice]. With BN after every conv the forward pass ignores s: it only sets the grid step 2s
# against ADAM's ~lr-sized moves. The ablation with s = 1 (BinaryConnect's H = 1) is in
# docs/results/mini_s1/ (`qtrain reproduce --scale mini --set scale=1 micro_batch=...`).
COMMON = {"optimizer": "adam", "lr": 0.01, "lr_gamma": 0.1, "grid": "binary", "scale": "mean", "quantize": "conv"}

# paper scale (the paper's protocol): CIFAR 164 epochs, decays at 82 and 123, batch 128, big 1024;
# ImageNet 40 epochs, decays at 20 and 30, batch 256, big 1024.
PAPER_COLUMNS = {
    "c10-vgg9": dict(data="cifar10", model="vgg9"),
    "c10-vggbc": dict(data="cifar10", model="vggbc"),
    "c10-resnet56": dict(data="cifar10", model="resnet56"),
    "c10-wrn56_2": dict(data="cifar10", model="wrn56_2"),
    "c100-resnet56": dict(data="cifar100", model="resnet56"),
    "imagenet-resnet18": dict(data="imagenet", model="resnet18"),
}
CIFAR = dict(epochs=164, lr_milestones=[82, 123], batch_size=128)
IMAGENET = dict(epochs=40, lr_milestones=[20, 30], batch_size=256)

# CPU scales [choice]: same protocol, smaller model/data/epochs. `threads: 1` fixes each run's torch thread
# count (results depend on it), so a table is the same on any machine and with any number of
# parallel workers (`qtrain table1 --workers`); the paper scale keeps torch's default.
SMALL = {
    # mini: BinaryConnect's protocol for every method (H = s = 1, latent weights ~ U(-1, 1), per-layer lr
    # x 1/sqrt(1.5/(fan_in + fan_out)), ADAM lr 0.003), chosen on a 5,000-image validation split among the
    # configurations listed in docs/results/README.md; width 16, the first 20,000 training images and
    # 10 epochs keep 3 seeds x 5 methods within a 2-core CPU budget.
    "mini": {"c10-smallcnn": dict(data="cifar10", model="smallcnn", width=16, epochs=10, lr_milestones=[6, 8],
                                  batch_size=128, train_subset=20000, scale=1.0, latent_init="uniform",
                                  lr_scale="glorot", lr=0.003, big_batch=1024, big_micro_batch=128,
                                  paper_column="c10-vgg9")},
    # cpu: the committed CPU study (docs/results/cpu/). All 50,000 training images, the full test set, `smallcnn`
    # width 32, 15 epochs, lr x0.1 after epochs 8 and 11 (final lr = 1% of the peak): configuration H of
    # docs/results/README.md, whose ADAM reached 25.68% validation error on the 5,000-image split. Two columns,
    # the two protocols: the poster's (s = the layer's mean |w| at init, default init, ADAM lr 0.01) and
    # BinaryConnect's (configuration C: s = H = 1, latent U(-1, 1), per-layer lr factor, ADAM lr 0.003).
    # `channels_last: true` feeds the convolutions channels-last batches: ~20-25% faster on this CPU (oneDNN),
    # other float bits; also at width 64 of the width trend (widths 8-32 ran before the setting existed).
    # Big SR-ADAM (batch 1024) runs twice: at equal epochs and at equal optimizer steps (8x the epochs,
    # milestones x8), the row `big-sr-adam-steps`.
    "cpu": {"c10-smallcnn-poster": dict(data="cifar10", model="smallcnn", width=32, epochs=15, lr_milestones=[8, 11],
                                        batch_size=128, scale="mean", lr=0.01, big_batch=1024, big_micro_batch=128,
                                        paper_column="c10-vgg9", equal_steps=True, channels_last=True),
            "c10-smallcnn-bc": dict(data="cifar10", model="smallcnn", width=32, epochs=15, lr_milestones=[8, 11],
                                    batch_size=128, scale=1.0, latent_init="uniform", lr_scale="glorot", lr=0.003,
                                    big_batch=1024, big_micro_batch=128, paper_column="c10-vgg9", equal_steps=True,
                                    channels_last=True)},
    # width: the width trend (docs/results/width/): ADAM, BC-ADAM, SR-ADAM at smallcnn widths 8-64 with the
    # mini scale's data, schedule and protocol (first 20,000 training images, 10 epochs, BinaryConnect's).
    "width": {f"c10-smallcnn-w{w}": dict(data="cifar10", model="smallcnn", width=w, epochs=10, lr_milestones=[6, 8],
                                         batch_size=128, train_subset=20000, scale=1.0, latent_init="uniform",
                                         lr_scale="glorot", lr=0.003, big_batch=None, big_micro_batch=None,
                                         paper_column="c10-vgg9", rows=("adam", "bc-adam", "sr-adam"),
                                         **({"channels_last": True} if w == 64 else {}))
              for w in (8, 16, 32, 64)},
    "quick": {"digits-smallcnn": dict(data="digits", model="smallcnn", width=16, epochs=16, lr_milestones=[8, 12],
                                      batch_size=32, big_batch=256, big_micro_batch=None, paper_column="c10-vgg9")},
}


def equal_steps_config(big: dict, small_batch: int) -> dict:
    """Big SR-ADAM trained for as many optimizer steps as SR-ADAM: epochs and lr milestones x (big / small batch)."""
    k = big["batch_size"] // small_batch
    if k * small_batch != big["batch_size"]:
        raise ValueError(f"big batch {big['batch_size']} is not a multiple of {small_batch}")
    return {**big, "epochs": big["epochs"] * k, "lr_milestones": [m * k for m in big["lr_milestones"]],
            "label": "big-sr-adam-steps", "extra": {**big["extra"], "equal_steps_with": "sr-adam"}}


def write(scale, column, row, cfg):
    path = OUT / scale / f"{column}.{row}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Table 1, {scale} scale: {column}, {row} (generated by scripts/make_presets.py)\n"
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))


def main():
    for column, base in PAPER_COLUMNS.items():
        sched = IMAGENET if base["data"] == "imagenet" else CIFAR
        for row, (method, big) in METHODS.items():
            cfg = {**base, "method": method, **COMMON, **sched, "label": row}
            if big:
                cfg["batch_size"] = 1024
            cfg["extra"] = {"paper_column": column}
            write("paper", column, row, cfg)
    for scale, columns in SMALL.items():
        for column, spec in columns.items():
            spec = dict(spec)
            big_batch, paper_column = spec.pop("big_batch"), spec.pop("paper_column")
            big_micro = spec.pop("big_micro_batch")  # e.g. 128: batch 1024 as 8 x 128 (2x faster on 2 CPU cores)
            rows, equal_steps = spec.pop("rows", tuple(METHODS)), spec.pop("equal_steps", False)
            for row in rows:
                method, big = METHODS[row]
                cfg = {**{k: spec[k] for k in ("data", "model")}, "method": method, **COMMON,
                       **{k: v for k, v in spec.items() if k not in ("data", "model")}, "label": row}
                if big:
                    cfg["batch_size"] = big_batch
                    if big_micro:
                        cfg["micro_batch"] = big_micro
                cfg["threads"] = 1
                cfg["extra"] = {"paper_column": paper_column}
                write(scale, column, row, cfg)
                if big and equal_steps:  # as many optimizer steps as the batch-128 rows: k = 1024/128 x the epochs
                    write(scale, column, "big-sr-adam-steps", equal_steps_config(cfg, spec["batch_size"]))


if __name__ == "__main__":
    main()
