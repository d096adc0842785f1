"""``qtrain export``: a run's weights as a compact ``.safetensors`` file (bit-packed codes)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as bit-packed .safetensors",
                       description="Quantized tensors are stored as packed integer codes (1 bit per binary "
                       "weight, 2 per ternary, b per b-bit grid, 8/16 per float-format weight), the rest as "
                       "they are; the file is reloaded and checked bit for bit. Sizes go into RUN/summary.json.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (config.json + checkpoint.pt)")
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. model.safetensors")
    p.add_argument("--evaluate", action="store_true", help="also measure the reloaded model's test error")
    p.add_argument("--data-dir", help="dataset folder, if it moved since training (none: the run's own)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..train.exporting import export_run
    from ..train.progress import rounded

    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out {args.out} should end in .safetensors, e.g. --out {args.out.with_suffix('.safetensors')}")
    info = export_run(args.run, args.out, evaluate=args.evaluate, data_dir=args.data_dir)
    print(f"exported {args.run} (epoch {info['epoch']}) to {info['path']}: {info['bytes']:,} bytes, "
          f"{info['bytes'] / info['float32_bytes']:.3f}x the float32 model ({info['float32_bytes']:,} bytes; "
          f"checkpoint.pt {info['checkpoint_bytes']:,} bytes); reloads bit-identically"
          + (f"; reloaded test error {info['test_error']:.2f}%" if args.evaluate else ""))
    print(json.dumps(rounded({k: info[k] for k in ("path", "bytes", "float32_bytes", "checkpoint_bytes", "packed_bytes",
                                                   "float_bytes", "header_bytes", "quantized")
                              + (("test_error",) if args.evaluate else ())})))
    return 0
