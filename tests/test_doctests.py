"""The runnable examples in the core modules' docstrings."""
import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["qtrain.grid", "qtrain.rng", "qtrain.rounding", "qtrain.optim",
                                  "qtrain.train.reestimate", "qtrain.experiments.render"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
