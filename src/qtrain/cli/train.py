"""``qtrain train``: one training run (also under ``torchrun`` for several processes)."""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path


def config_defaults() -> dict:
    """TrainConfig's field defaults, read from ``train/config.py`` without importing it (that
    would load torch just to print ``--help``); ``tests/cli`` checks them against the dataclass."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / "train" / "config.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    out = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            try:
                out[node.target.id] = ast.literal_eval(node.value)
            except ValueError:  # field(default_factory=...)
                continue
    return out


_HELP = {  # flag -> one-line description; the default is appended from TrainConfig
    "data": "dataset: cifar10 | cifar100 | mnist | imagenet | digits (digits is embedded: no --data-dir) | "
            "shakespeare (characters; input.txt in --data-dir)",
    "model": "vgg9 | vggbc | resnet20 | resnet56 | wrn56_2 | resnet18 | smallcnn | mlp | gpt-tiny (language model)",
    "method": "float (no quantization) | bc (BinaryConnect) | r (deterministic rounding) | sr (stochastic rounding)",
    "optimizer": "sgd | adam | adamw (the base optimizer the method wraps) | torchao-sr-adamw (torchao's bf16 SR "
                 "AdamW: --weight-dtype bfloat16, --method float)",
    "epochs": "training epochs",
    "batch_size": "global batch size (split across torchrun processes)",
    "micro_batch": "accumulate gradients over chunks of this many examples per process",
    "lr": "learning rate",
    "lr_milestones": "epochs at which lr *= --lr-gamma (none given: 50% and 75% of --epochs)",
    "lr_gamma": "factor applied to the lr at each milestone",
    "lr_schedule": "step (lr *= --lr-gamma at --lr-milestones) | cosine (per step, to 0)",
    "warmup_steps": "cosine: linear warmup over this many steps",
    "momentum": "SGD momentum (--optimizer sgd only)",
    "weight_decay": "L2 weight decay of the base optimizer",
    "grid": "binary | ternary | uniform | bfloat16 | float16 | float8_e4m3fn | float8_e5m2",
    "scale": "binary/ternary scale s: 'mean' (per-layer mean |w| at init), 'dynamic' (mean |w| recomputed at every "
             "step, BitNet) or a number",
    "delta": "uniform grid step Δ (needed by --grid uniform)",
    "bits": "uniform grid bit width (none: unbounded)",
    "quantize": "conv (conv weights, the paper) | all (every weight with ndim > 1) | blocks (Linear weights of a "
                "transformer's blocks) | every (every parameter); none: conv for image models, blocks for gpt-tiny",
    "bc_rounding": "BC's forward rounding: nearest | stochastic",
    "width": "width of models that take one (smallcnn; none: the model's own)",
    "block_size": "language models: context length in characters (none: 64)",
    "steps_per_epoch": "language models: optimizer steps per epoch (none: 100)",
    "state_dtype": "bfloat16 | float16 | float32: keep the optimizer's moments in that dtype (SGD/Adam/AdamW; "
                   "written back with stochastic rounding; none: the parameters' dtype)",
    "weight_dtype": "language models: float32 | bfloat16 (the whole model stored in bfloat16)",
    "train_subset": "use the first N training images (none: all)",
    "test_subset": "use the first N test images (none: all)",
    "val_size": "hold out the last N training images; evaluate on them, not the test set",
    "latent_init": "default | uniform (quantized tensors ~ U(-s, s), BinaryConnect)",
    "lr_scale": "none | glorot (BinaryConnect's per-layer lr factor for quantized tensors)",
    "seed": "random seed (data order, augmentation, initialisation, SR draws)",
    "threads": "torch threads of the run; results depend on it (none: picked from the model's work per batch "
               "and the cores, 1 for small models; the number used is recorded in config.json)",
    "data_dir": "folder holding the dataset (or its parent; none: $QTRAIN_DATA or ~/.cache/qtrain/data)",
    "download": "download CIFAR-10/100 into --data-dir if missing (checksummed)",
    "device": "auto | cpu | cuda | cuda:N",
    "tensorboard": "also log scalars to RUN/tensorboard/ (needs: pip install 'qtrain[tensorboard]')",
    "checkpoint_minutes": "also save mid-epoch every M minutes (0: at epoch ends only); SIGINT/SIGTERM always save",
    "dist_timeout": "under torchrun: give up with one line when another rank is silent this long",
    "channels_last": "feed image batches in channels-last memory layout (faster convolutions on CPU; other bits)",
    "fsdp": "shard parameters, optimizer state and BC latents over the ranks (FSDP2, per block); checkpoints are "
            "sharded (torch.distributed.checkpoint) and resume on any number of ranks",
}
_TYPES = {"block_size": int, "steps_per_epoch": int, "warmup_steps": int, "epochs": int, "batch_size": int, "micro_batch": int, "lr": float, "lr_gamma": float, "momentum": float,
          "weight_decay": float, "delta": float, "bits": int, "width": int, "train_subset": int, "test_subset": int,
          "val_size": int, "seed": int, "threads": int, "checkpoint_minutes": float, "dist_timeout": float}
_METAVARS = {"checkpoint_minutes": "M", "dist_timeout": "SECONDS"}


def register(sub) -> None:
    p = sub.add_parser("train", help="train one quantized (or float) model",
                       description="Train a model with float / BC / R / SR. Flags override --config, which "
                       "overrides the defaults shown. Multi-process: torchrun --nproc_per_node N -m qtrain train ...")
    p.add_argument("--config", type=Path, help="preset YAML of TrainConfig fields (the paths: `qtrain table1 --scale quick --list`)")
    p.add_argument("--out", type=Path, help="run directory (metrics.jsonl/.csv, checkpoint.pt, summary.json)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    defaults = config_defaults()
    for name, text in _HELP.items():
        flag = "--" + name.replace("_", "-")
        default = defaults.get(name)
        shown = "off" if default is False else "none" if default is None else default
        help_ = f"{text} (default: {shown})".replace("%", "%%")  # argparse formats help with %
        if name in ("download", "tensorboard", "fsdp"):
            p.add_argument(flag, action="store_true", default=None, help=help_)
        elif name == "channels_last":  # presets turn it on: --no-channels-last turns it off (e.g. on a GPU)
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif name == "lr_milestones":
            p.add_argument(flag, type=int, nargs="*", help=help_)
        else:
            p.add_argument(flag, type=_TYPES.get(name), metavar=_METAVARS.get(name), help=help_)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bars; one line per epoch instead (also the default when stdout is not a terminal)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..train import distributed, from_sources, load_run_config, run
    from ..train.progress import rounded

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
    keys = ("data", "model", "method", "optimizer", "batch_size", "epochs", "test_error", "seconds", "threads")
    print(json.dumps(rounded({k: summary[k] for k in keys + (("val_loss",) if "val_loss" in summary else ())})))
    return 0


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--{name} {value!r} must be a number or 'mean'") from None
