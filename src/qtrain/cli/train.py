"""``qtrain train``: one training run (also under ``torchrun`` for several processes)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..train.config import OPTIMIZERS, TrainConfig


def register(sub) -> None:
    p = sub.add_parser("train", help="train one quantized (or float) model",
                       description="Train a model with float / BC / R / SR. Flags override --config. "
                       "Multi-process: torchrun --nproc_per_node N -m qtrain train ...")
    p.add_argument("--config", type=Path, help="preset YAML of TrainConfig fields")
    p.add_argument("--out", type=Path, help="run directory (metrics.jsonl, checkpoint.pt, summary.json)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--data", help="cifar10 | cifar100 | mnist | imagenet | digits | shakespeare (text: input.txt in --data-dir)")
    p.add_argument("--model", help="vgg9 | vggbc | resnet20 | resnet56 | wrn56_2 | resnet18 | smallcnn | mlp | gpt-tiny")
    p.add_argument("--method", help="float | bc | r | sr")
    p.add_argument("--optimizer", help=" | ".join(OPTIMIZERS))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--micro-batch", type=int, help="accumulate gradients over chunks of this many examples per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-milestones", type=int, nargs="*", help="epochs at which lr *= --lr-gamma (default: 50%% and 75%%)")
    p.add_argument("--lr-gamma", type=float)
    p.add_argument("--lr-schedule", help="step (lr *= --lr-gamma at --lr-milestones) | cosine (per step, to 0)")
    p.add_argument("--warmup-steps", type=int, help="cosine: linear warmup over this many steps")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grid", help="binary | ternary | uniform | bfloat16 | float16 | float8_e4m3fn | float8_e5m2")
    p.add_argument("--scale", help="binary/ternary scale s: 'mean' (default: per-layer mean |w| at init), 'dynamic' "
                   "(mean |w| recomputed at every step, BitNet) or a number")
    p.add_argument("--delta", type=float, help="uniform grid step Δ")
    p.add_argument("--bits", type=int, help="uniform grid bit width")
    p.add_argument("--quantize", help="conv (conv weights, the paper) | all (every weight with ndim > 1) | "
                   "blocks (Linear weights of a transformer's blocks; gpt-tiny's default) | every (every parameter)")
    p.add_argument("--bc-rounding", help="nearest | stochastic")
    p.add_argument("--width", type=int, help="width of models that take one (smallcnn)")
    p.add_argument("--block-size", type=int, help="language models: context length (default 64)")
    p.add_argument("--steps-per-epoch", type=int, help="language models: optimizer steps per epoch (default 100)")
    p.add_argument("--state-dtype", help="bfloat16 | float16 | float32: keep the optimizer's moments in that dtype "
                   "(SGD/Adam/AdamW; written back with stochastic rounding)")
    p.add_argument("--weight-dtype", help="language models: float32 | bfloat16 (the whole model stored in bfloat16)")
    p.add_argument("--train-subset", type=int, help="use the first N training images")
    p.add_argument("--test-subset", type=int, help="use the first N test images")
    p.add_argument("--val-size", type=int, help="hold out the last N training images; evaluate on them, not the test set")
    p.add_argument("--latent-init", help="default | uniform (quantized tensors ~ U(-s, s), BinaryConnect)")
    p.add_argument("--lr-scale", help="none | glorot (BinaryConnect's per-layer lr factor for quantized tensors)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads of the run (results depend on it; default: torch's)")
    p.add_argument("--data-dir", help="folder holding the dataset (or its parent)")
    p.add_argument("--download", action="store_true", default=None, help="download CIFAR if missing")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--tensorboard", action="store_true", default=None)
    p.add_argument("--checkpoint-minutes", type=float, metavar="M",
                   help="also save mid-epoch every M minutes (default 10; 0: at epoch ends only); SIGINT/SIGTERM always save")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: give up with one line when another rank is silent this long (default 600)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..train import distributed, from_sources, load_run_config, run

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "out", "resume", "func", "command")}
    if overrides.get("scale") not in (None, "mean", "dynamic"):
        overrides["scale"] = _number("scale", overrides["scale"])
    if args.resume is not None:
        if args.config is not None:
            raise ValueError("--resume continues a run with its own config.json; drop --config")
        cfg = load_run_config(args.resume)
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        summary = run(cfg, args.resume, resume=True)
    else:
        if args.out is None:
            raise ValueError("--out RUN_DIR is required (where metrics, checkpoints and summary.json go)")
        cfg = from_sources(args.config, overrides)
        summary = run(cfg, args.out)
    if distributed.env_rank() != 0:  # under torchrun only rank 0 reports
        return 0
    keys = ("data", "model", "method", "optimizer", "batch_size", "epochs", "test_error", "seconds")
    print(json.dumps({k: summary[k] for k in keys + (("val_loss",) if "val_loss" in summary else ())}))
    return 0


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--{name} {value!r} must be a number or 'mean'") from None
