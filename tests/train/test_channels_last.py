"""``channels_last``: the convolutions see channels-last batches, the weights and checkpoints keep their
layout, training is as good and as reproducible, and language models refuse the setting."""
import pickle

import numpy as np
import pytest
import torch

import qtrain.train.loop as loop
from qtrain.train import TrainConfig, load_checkpoint, read_metrics, run
from qtrain.train.checkpoint import save_checkpoint
from qtrain.train.config import make

TINY = dict(data="cifar10", model="smallcnn", width=8, epochs=2, batch_size=32, progress=False, method="sr", lr_milestones=[1],
            threads=1)


@pytest.fixture
def cifar(tmp_path):
    """A fake CIFAR-10 folder (official pickled batches, 64 random images each): three channels, unlike
    digits, whose (N, 1, H, W) batches are channels-last and contiguous at once."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (64, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 64)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return dict(TINY, data_dir=str(tmp_path))


def test_batches_reach_the_model_channels_last_and_weights_keep_their_layout(tmp_path, monkeypatch, cifar):
    real_build, seen = loop.build, []

    def spying(*a, **k):
        model = real_build(*a, **k)
        second_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]  # > 1 input channel
        second_conv.register_forward_pre_hook(lambda m, args: seen.append(
            args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
        return model
    monkeypatch.setattr(loop, "build", spying)
    run(TrainConfig(channels_last=True, **cifar), tmp_path / "run")
    assert seen and all(seen)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert all(t.is_contiguous() for t in state.values())


def test_channels_last_reproduces_its_own_bits(tmp_path, cifar):
    a = run(TrainConfig(channels_last=True, **cifar), tmp_path / "a")
    b = run(TrainConfig(channels_last=True, **cifar), tmp_path / "b")
    plain = run(TrainConfig(**cifar), tmp_path / "plain")
    ma, mb = (load_checkpoint(tmp_path / r / "checkpoint.pt")["model"] for r in ("a", "b"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert a["test_error"] == b["test_error"]
    mp = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    assert max((ma[k] - mp[k]).abs().max().item() for k in ma if ma[k].is_floating_point()) > 0  # other bits
    assert [r["epoch"] for r in read_metrics(tmp_path / "a")] == [1, 2]


def test_bad_and_misplaced_values_are_refused():
    with pytest.raises(ValueError, match="channels_last='yes' must be true or false"):
        make(dict(data="digits", model="smallcnn", channels_last="yes"))
    with pytest.raises(ValueError, match="image models only"):
        make(dict(data="shakespeare", model="gpt-tiny", channels_last=True))


def test_resume_keeps_the_layout_of_the_checkpoint(tmp_path, cifar):
    """A run made before the setting existed (no key: channels_last=False) is not resumed channels-last."""
    run(TrainConfig(**dict(cifar, epochs=1)), tmp_path / "old")
    ck_path = tmp_path / "old" / "checkpoint.pt"
    ck = load_checkpoint(ck_path)
    ck["config"].pop("channels_last")
    save_checkpoint(ck_path, {k: v for k, v in ck.items() if k != "format"})
    with pytest.raises(ValueError, match="channels_last"):
        run(TrainConfig(**dict(cifar, epochs=2, channels_last=True)), tmp_path / "old", resume=True)
    run(TrainConfig(**dict(cifar, epochs=2)), tmp_path / "old", resume=True)  # its own layout resumes


def test_export_evaluates_in_the_run_layout(tmp_path, cifar):
    """``qtrain export --evaluate`` rebuilds the model with the run's input layout: same test error bit for bit."""
    from qtrain.train.exporting import export_run
    s = run(TrainConfig(channels_last=True, **cifar), tmp_path / "run")
    info = export_run(tmp_path / "run", tmp_path / "model.qtrain", evaluate=True, data_dir=cifar["data_dir"])
    assert info["test_error"] == s["test_error"]
