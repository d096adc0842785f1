"""qtrain: train quantized neural networks (BC, R, SR) and see why they differ.

Implements *Training Quantized Nets: A Deeper Understanding* (Li, De, Xu, Studer, Samet,
Goldstein; NeurIPS 2017). Core names:

* :class:`Grid` -- uniform (Δ, bits), binary {-s, s}, ternary {-s, 0, s} grids;
* :func:`quantize` -- the poster's Q_d ("nearest") and Q_s ("stochastic");
* :class:`QuantizedOptimizer` -- float / BC / R / SR over any ``torch.optim`` optimizer;
* :func:`conv_weights` -- the paper's choice of what to quantize.
"""
import importlib as _importlib

# name -> submodule; imported on first use, so ``qtrain --help`` answers without loading torch
_EXPORTS = {"Grid": "grid", "DynamicGrid": "dynamic", "quantize": "rounding", "QuantizedOptimizer": "optim",
            "conv_weights": "optim",
            "named_conv_weights": "optim", "METHODS": "optim"}

__all__ = ["Grid", "DynamicGrid", "quantize", "QuantizedOptimizer", "conv_weights", "named_conv_weights", "METHODS"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qtrain' has no attribute {name!r}")


def __dir__():
    return sorted({n for n in globals() if not n.startswith("_") or n.startswith("__")} | set(__all__))
