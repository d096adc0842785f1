"""qtrain: train quantized neural networks (BC, R, SR) and see why they differ.

Implements *Training Quantized Nets: A Deeper Understanding* (Li, De, Xu, Studer, Samet,
Goldstein; NeurIPS 2017). Core names:

* :class:`Grid` -- uniform (Δ, bits), binary {-s, s}, ternary {-s, 0, s} grids;
* :func:`quantize` -- the poster's Q_d ("nearest") and Q_s ("stochastic");
* :class:`QuantizedOptimizer` -- float / BC / R / SR over any ``torch.optim`` optimizer;
* :func:`conv_weights` -- the paper's choice of what to quantize.
"""
from .grid import Grid
from .dynamic import DynamicGrid
from .rounding import quantize
from .optim import METHODS, QuantizedOptimizer, conv_weights, named_conv_weights

__all__ = ["Grid", "DynamicGrid", "quantize", "QuantizedOptimizer", "conv_weights", "named_conv_weights", "METHODS"]
__version__ = "0.1.0"
