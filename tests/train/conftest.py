"""Fixtures for the training tests."""
import pytest


@pytest.fixture
def poison_loss(monkeypatch):
    """``poison_loss(when)``: models built by the training loop return NaN from the forward call
    numbers (1, 2, ...) for which ``when(n)`` is true, so the loss becomes NaN there."""
    import qtrain.train.loop as loop

    real_build, calls = loop.build, [0]

    def poison(when):
        def poisoned(*a, **k):
            model = real_build(*a, **k)
            fwd = model.forward

            def forward(x):
                calls[0] += 1
                out = fwd(x)
                return out * float("nan") if when(calls[0]) else out
            model.forward = forward
            return model
        monkeypatch.setattr(loop, "build", poisoned)

    return poison
