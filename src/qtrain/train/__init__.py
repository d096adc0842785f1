"""Training quantized CNNs: config, loop, checkpoints, metrics, multi-process.

>>> from qtrain.train import TrainConfig
>>> TrainConfig(data="digits", model="smallcnn", method="bc", epochs=2).validate().milestones()
[1, 2]
"""
from .._io import atomic_write_json
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, from_sources
from .loop import load_run_config, run
from .metrics import WeightChangeTracker, read_metrics

__all__ = ["TrainConfig", "from_sources", "run", "load_run_config", "WeightChangeTracker", "read_metrics",
           "save_checkpoint", "load_checkpoint", "atomic_write_json"]
