import os

import pytest
import torch

# Hypothesis: derandomised, so every run draws the same examples and a statistical test
# either always passes or always fails (no flakes).
try:
    from hypothesis import settings

    settings.register_profile("qtrain", derandomize=True, deadline=None, print_blob=True)
    settings.load_profile("qtrain")
except ImportError:  # pragma: no cover
    pass

os.environ.setdefault("MPLBACKEND", "Agg")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
