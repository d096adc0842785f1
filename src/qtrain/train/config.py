"""One training run's settings: a flat dataclass, loadable from YAML presets, validated up front.

Precedence: dataclass defaults < preset YAML (``--config``) < explicit command-line flags.
Every bad value raises ``ValueError`` naming the field, the value and the fix, before any
work starts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .._yaml import load as load_yaml_text
from ..grid import Grid
from ..optim import METHODS
from .provenance import PROVENANCE_KEYS  # records in a run's config.json, skipped when it is read back

OPTIMIZERS = ("sgd", "adam", "adamw", "torchao-sr-adamw")  # the last: torchao's bf16 stochastic-rounding AdamW
FLOAT_GRIDS = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")  # Grid.float(name); scale/delta unused
GRIDS = ("binary", "ternary", "uniform") + FLOAT_GRIDS
QUANTIZE = ("conv", "all", "blocks", "every")  # default: conv (CNNs), blocks (language models)
LR_SCHEDULES = ("step", "cosine")
WEIGHT_DTYPES = ("float32", "bfloat16")
STATE_DTYPES = ("bfloat16", "float16", "float32")  # QuantizedOptimizer(state_dtype=...): the base optimizer's moments
LATENT_INITS = ("default", "uniform")
LR_SCALES = ("none", "glorot")
# upper bounds of the integer and time settings (far above any real run; they stop a typo or a
# hostile file from asking for terabytes, a thread per core of a cluster or an overflow)
LIMITS = {"epochs": 10**6, "batch_size": 2**31 - 1, "micro_batch": 2**31 - 1, "train_subset": 2**31 - 1,
          "test_subset": 2**31 - 1, "val_size": 2**31 - 1, "width": 4096, "threads": 1024,
          "seed": 2**63 - 1, "checkpoint_minutes": 10**6, "dist_timeout": 10**7, "block_size": 1 << 16,
          "steps_per_epoch": 10**9, "warmup_steps": 10**9}


@dataclass
class TrainConfig:
    """Settings of one run. Defaults follow the paper's Table 1 protocol (ADAM, lr 0.01 decayed 10x at 50% and 75%)."""

    data: str = "cifar10"
    model: str = "resnet20"
    method: str = "float"           # float | bc | r | sr
    optimizer: str = "adam"         # sgd | adam | adamw | torchao-sr-adamw
    epochs: int = 164
    batch_size: int = 128           # global batch (split across processes)
    micro_batch: Optional[int] = None  # accumulate gradients over chunks of this size (per process)
    lr: float = 0.01
    lr_milestones: Optional[list] = None  # epochs at which lr *= lr_gamma; default: 50% and 75%
    lr_gamma: float = 0.1
    lr_schedule: str = "step"       # step: lr *= lr_gamma at lr_milestones (per epoch); cosine: per step, see train/schedule.py
    warmup_steps: int = 0           # cosine only: linear warmup over this many steps
    momentum: float = 0.9           # SGD only
    weight_decay: float = 0.0
    grid: str = "binary"            # binary | ternary | uniform | bfloat16 | float16 | float8_e4m3fn | float8_e5m2
    scale: Union[str, float] = "mean"  # binary/ternary s [choice]: "mean" = per-layer mean |w| at init, or a number (e.g. 1);
    # "dynamic": recomputed as mean |w| from the weights being rounded at every step (BitNet absmean; qtrain.dynamic)
    delta: Optional[float] = None   # uniform grids: Δ
    bits: Optional[int] = None      # uniform grids: bit width (None = unbounded)
    quantize: Optional[str] = None  # conv: conv weights (the paper); all: every weight with ndim > 1; blocks: Linear
    # weights of a transformer's blocks (BitNet); every: every parameter. None: conv, or blocks for language models
    bc_rounding: str = "nearest"
    width: Optional[int] = None     # width parameter of models that take one (smallcnn)
    block_size: Optional[int] = None  # language models: context length T (default 64)
    steps_per_epoch: Optional[int] = None  # language models: optimizer steps per "epoch" (default 100)
    weight_dtype: str = "float32"   # float32 | bfloat16 (language models: the whole model stored in that dtype)
    state_dtype: Optional[str] = None  # bfloat16 | float16 | float32: optimizer moments in that dtype (SR write-back)
    train_subset: Optional[int] = None  # use only the first N training images (quick runs, tests)
    test_subset: Optional[int] = None
    val_size: Optional[int] = None  # hold out the last N training images and evaluate on them instead of the test set
    latent_init: str = "default"    # default: the model's init; uniform: quantized tensors ~ U(-s, s) (BinaryConnect, H = s)
    lr_scale: str = "none"          # none | glorot: quantized tensors' lr *= 1/sqrt(1.5/(fan_in+fan_out)) (BinaryConnect)
    seed: int = 0
    threads: Optional[int] = None   # torch threads of the run (torch.set_num_threads); None: torch's default.
    # Results depend on it (reduction order), so the presets fix it per scale, not per machine.
    channels_last: bool = False     # feed image batches in channels-last layout (CPU oneDNN convs ~20-25% faster for
    # smallcnn); the weights keep their layout, the float rounding order (and so the bits) changes
    data_dir: Optional[str] = None
    download: bool = False
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    progress: bool = True
    tensorboard: bool = False
    checkpoint_minutes: float = 10.0  # mid-epoch checkpoint every M minutes (0: at epoch ends only)
    dist_timeout: float = 600.0     # seconds a rank waits for the others under torchrun before giving up
    fsdp: bool = False              # shard parameters, moments and BC latents over the ranks (FSDP2, per block)
    label: Optional[str] = None     # free text shown in reports (e.g. "Big SR-ADAM")
    extra: dict = field(default_factory=dict)  # ignored by the trainer; carried into summary.json

    def milestones(self) -> list:
        if self.lr_milestones is not None:
            return [int(m) for m in self.lr_milestones]
        return [max(1, round(self.epochs * 0.5)), max(1, round(self.epochs * 0.75))]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        from ..data import DATASETS, LM_DATASETS
        from ..models import LM_MODELS, MODELS

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, allowed))}")

        choice("data", DATASETS + LM_DATASETS)
        choice("model", MODELS + LM_MODELS)
        choice("method", METHODS)
        choice("optimizer", OPTIMIZERS)
        choice("grid", GRIDS)
        lm = self.data in LM_DATASETS
        if self.quantize is None:  # the model's default, written into config.json
            self.quantize = "blocks" if self.model in LM_MODELS else "conv"
        choice("quantize", QUANTIZE)
        choice("lr_schedule", LR_SCHEDULES)
        choice("weight_dtype", WEIGHT_DTYPES)
        if self.state_dtype is not None:
            choice("state_dtype", STATE_DTYPES)
        if lm != (self.model in LM_MODELS):
            raise ValueError(f"model {self.model!r} does not fit data {self.data!r}: language models "
                             f"({', '.join(LM_MODELS)}) train on text ({', '.join(LM_DATASETS)}) and image models on images")
        if lm:
            self.block_size = 64 if self.block_size is None else self.block_size
            self.steps_per_epoch = 100 if self.steps_per_epoch is None else self.steps_per_epoch
            if self.channels_last:
                raise ValueError("channels_last=True applies to image models only (language models take token ids); drop it")
        else:
            for name in ("block_size", "steps_per_epoch"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}={getattr(self, name)!r} applies to language models (--data "
                                     f"{' | '.join(LM_DATASETS)}) only; drop it")
            if self.weight_dtype != "float32":
                raise ValueError(f"weight_dtype={self.weight_dtype!r} applies to language models only (image "
                                 "models: keep float32 weights and use a float-format --grid)")
        if self.optimizer == "torchao-sr-adamw" and (self.weight_dtype != "bfloat16" or self.method != "float"):
            raise ValueError("optimizer='torchao-sr-adamw' rounds bfloat16 weights itself: use it with "
                             "--weight-dtype bfloat16 --method float")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if self.warmup_steps and self.lr_schedule != "cosine":
            raise ValueError(f"warmup_steps={self.warmup_steps} needs lr_schedule='cosine' (--lr-schedule cosine)")
        choice("bc_rounding", ("nearest", "stochastic"))
        choice("latent_init", LATENT_INITS)
        choice("lr_scale", LR_SCALES)
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= LIMITS[name]:
                raise ValueError(f"{name}={_short(v)} must be a positive integer up to {LIMITS[name]:,}")
        for name in ("train_subset", "test_subset", "val_size", "width", "micro_batch", "threads", "block_size",
                     "steps_per_epoch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= LIMITS[name]):
                raise ValueError(f"{name}={_short(v)} must be a positive integer up to {LIMITS[name]:,} (or omitted)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= LIMITS["seed"]:
            raise ValueError(f"seed={_short(self.seed)} must be an integer in 0..2**63-1, e.g. --seed 0")
        if self.bits is not None and (isinstance(self.bits, bool) or not isinstance(self.bits, int)
                                      or not 1 <= self.bits <= 32):
            raise ValueError(f"bits={_short(self.bits)} must be an integer in 1..32 (or omitted: unbounded)")
        for name in ("data_dir", "label"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name}={_short(v)} must be text (or omitted)")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra={_short(self.extra)} must be a mapping")
        _check_json("extra", self.extra)
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0, e.g. --lr 0.01")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma={self.lr_gamma!r} must be in (0, 1]")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0 and momentum={self.momentum!r} in [0, 1)")
        if self.scale == "dynamic" and self.grid not in ("binary", "ternary"):
            raise ValueError(f"scale='dynamic' (absmean at every step) applies to binary and ternary grids, not {self.grid!r}")
        if self.scale not in ("mean", "dynamic"):
            try:
                float(self.scale)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"scale={_short(self.scale)} must be 'mean', 'dynamic' or a number > 0") from None
        if self.width is not None and self.model != "smallcnn":
            raise ValueError(f"width={self.width!r} applies to model 'smallcnn' only, not {self.model!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,4})?|mps", self.device):
            raise ValueError(f"device={_short(self.device)} must be auto, cpu, cuda or cuda:N")
        for name in ("checkpoint_minutes", "dist_timeout"):
            v = getattr(self, name)
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or not (name == "dist_timeout") <= v <= LIMITS[name]):
                raise ValueError(f"{name}={_short(v)} must be a number in {int(name == 'dist_timeout')}..{LIMITS[name]:g}, "
                                 f"e.g. --{name.replace('_', '-')} 10")
        if self.grid == "uniform" and self.delta is None:
            raise ValueError("grid='uniform' needs delta (Δ > 0), e.g. --delta 0.0625")
        self.make_grid(1.0)  # raises on a bad Δ, bits or scale
        grid = self.make_grid(1.0)
        if self.latent_init == "uniform" and (grid.kind == "float" or not grid.bounded):
            raise ValueError(f"latent_init='uniform' draws from [low, high] of a binary, ternary or bounded uniform "
                             f"grid, not {grid!r}: use latent_init=default (or pass --bits for a uniform grid)")
        return self

    def make_grid(self, mean_abs: float) -> Grid:
        """The grid of a layer whose initial float weights have mean absolute value ``mean_abs``."""
        s = (mean_abs if mean_abs > 0 else 1.0) if self.scale in ("mean", "dynamic") else float(self.scale)
        if self.grid == "binary":
            return Grid.binary(s)
        if self.grid == "ternary":
            return Grid.ternary(s)
        if self.grid in FLOAT_GRIDS:
            return Grid.float(self.grid)
        return Grid.uniform(self.delta, self.bits)

    def grid_spec(self, scales: dict):
        """What the optimizer gets: a per-step absmean rule (``scale='dynamic'``) or, per tensor, the grid of
        :meth:`make_grid` at its initial mean |w| (``scales``: ``id(param) -> mean |w|``)."""
        if self.scale == "dynamic":
            from ..dynamic import DynamicGrid
            return DynamicGrid.ternary() if self.grid == "ternary" else DynamicGrid.binary()
        return lambda p: self.make_grid(scales[id(p)])


def from_sources(preset: Optional[Union[str, Path]] = None, overrides: Optional[dict] = None) -> TrainConfig:
    """Defaults, then ``preset`` (a YAML file of TrainConfig fields), then ``overrides`` (non-None only)."""
    values: dict[str, Any] = {}
    if preset is not None:
        values.update(load_yaml(preset))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make(values)


def recorded(saved: dict, key: str) -> Any:
    """Setting ``key`` as a run recorded it (its ``config.json`` or checkpoint); a setting newer than
    the run was then its default (used on resume and when a table reuses finished runs)."""
    if key in saved:
        return saved[key]
    f = TrainConfig.__dataclass_fields__[key]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def load_yaml(path: Union[str, Path]) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; pass a preset YAML path (see `qtrain table1 --scale quick --list`)")
    with open(path, "rb") as f:
        raw = f.read(MAX_SETTINGS_BYTES + 1)
    try:
        data = load_yaml_text(raw.decode("utf-8"), f"config file {path}") or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of TrainConfig fields, got {type(data).__name__}")
    return data


MAX_SETTINGS_BYTES = 1 << 20
_FLOATS = ("lr", "lr_gamma", "momentum", "weight_decay", "delta", "checkpoint_minutes", "dist_timeout")
_INTS = ("epochs", "batch_size", "micro_batch", "bits", "width", "train_subset", "test_subset", "val_size", "seed",
         "threads", "block_size", "steps_per_epoch", "warmup_steps")
_OPTIONAL = ("delta", "bits", "width", "micro_batch", "train_subset", "test_subset", "val_size", "threads",
             "block_size", "steps_per_epoch")  # may be null


def make(values: dict) -> TrainConfig:
    """A validated config from a mapping (YAML, JSON, flags); numbers written as strings
    (YAML reads ``5e-4`` as a string) are converted, anything else of the wrong type is refused.
    A run's records in its ``config.json`` (``machine``, ``data_sha256``, ``earlier_machines``) are skipped."""
    if not isinstance(values, dict):
        raise ValueError(f"settings must be a mapping of TrainConfig fields, got a {type(values).__name__}")
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise ValueError(f"setting name {bad[0]!r} is not text; write TrainConfig field names as keys, e.g. epochs: 10")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known - set(PROVENANCE_KEYS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in values.items() if k not in PROVENANCE_KEYS}
    for name in _FLOATS + _INTS:
        v = values.get(name)
        if v is None or isinstance(v, bool):
            if isinstance(v, bool) or (v is None and name not in _OPTIONAL and name in values):
                raise ValueError(f"{name}={v!r} must be a number")
            continue
        try:
            values[name] = float(v) if name in _FLOATS else _as_int(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name}={_short(v)} must be {'a number' if name in _FLOATS else 'an integer'}") from None
    milestones = values.get("lr_milestones")
    if milestones is not None:
        if not isinstance(milestones, (list, tuple)) or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0
                                                               for m in milestones):
            raise ValueError(f"lr_milestones={_short(milestones)} must be a list of positive epoch numbers, e.g. [82, 123]")
    for name in ("progress", "tensorboard", "download", "fsdp", "channels_last"):
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{name}={values[name]!r} must be true or false")
    if "extra" in values and not isinstance(values["extra"], dict):
        raise ValueError(f"extra={values['extra']!r} must be a mapping")
    return TrainConfig(**values).validate()


def _as_int(v) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str) and len(v) > 40:
        raise ValueError(v)
    f = float(v)
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def load_run_config(run_dir: Path, flag: str = "--resume") -> TrainConfig:
    """The config a run in ``run_dir`` was started with (for ``--resume``, ``qtrain export``);
    ``flag`` names the argument that took ``run_dir`` in the one-line error when it is not a run."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (it does not exist; a run folder holds config.json and "
                                f"checkpoint.pt); {flag} takes the --out folder of a "
                                "`qtrain train` run (a run stopped before its first save leaves none: rerun its "
                                "original command)")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json); {flag} takes the --out folder of a "
                                "`qtrain train` run (a run stopped before it wrote anything: rerun its original command)")
    try:
        values = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as e:  # not UTF-8, or not JSON
        raise ValueError(f"{path} is corrupt ({str(e)[:100]}); restore it or start a new run") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds a {type(values).__name__}, not a run's settings; restore it or start a new run")
    return make(values)


def _short(v) -> str:
    """``repr(v)``, cut to a readable length (a 400-digit number, a long list)."""
    text = repr(v)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _check_json(where: str, v, depth: int = 0) -> None:
    """Refuse values that JSON (config.json, summary.json) cannot hold as they are."""
    if depth > 50:
        raise ValueError(f"{where} is nested too deeply")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has the key {_short(k)}; keys must be text (quote it)")
            _check_json(f"{where}.{k}", x, depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_json(f"{where}[{i}]", x, depth + 1)
    elif not (v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))):
        raise ValueError(f"{where}={_short(v)} is not a JSON value (text, number, true/false, null, list, mapping); "
                         "quote it to keep it as text")
