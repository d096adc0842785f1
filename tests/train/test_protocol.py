"""The training-protocol options: validation split, BinaryConnect's latent init and lr scaling."""
import math

import pytest
import torch

from qtrain.train import from_sources, run
from qtrain.train.loop import glorot_lr_scale, subset
from qtrain.data import load_dataset


def test_val_split_holds_out_last_training_images():
    cfg = from_sources(None, {"data": "digits", "model": "mlp", "val_size": 100})
    ds = load_dataset("digits", None)
    sub = subset(ds, cfg)
    assert len(sub.train_x) == len(ds.train_x) - 100
    assert torch.equal(sub.test_x, ds.train_x[-100:]) and torch.equal(sub.test_y, ds.train_y[-100:])
    with pytest.raises(ValueError, match="val_size"):
        subset(ds, from_sources(None, {"data": "digits", "model": "mlp", "val_size": len(ds.train_x)}))


def test_glorot_lr_scale_matches_binaryconnect():
    w = torch.empty(64, 32, 3, 3)  # fan_in 288, fan_out 576
    assert glorot_lr_scale(w) == pytest.approx(1 / math.sqrt(1.5 / (288 + 576)))
    assert glorot_lr_scale(torch.empty(10, 20)) == pytest.approx(1 / math.sqrt(1.5 / 30))


def test_uniform_latent_init_and_lr_groups_train():
    s = run(from_sources(None, {"data": "digits", "model": "smallcnn", "width": 8, "method": "bc", "epochs": 1,
                                "scale": 1.0, "latent_init": "uniform", "lr_scale": "glorot", "lr": 0.003,
                                "val_size": 200, "progress": False, "train_subset": 600}), None)
    assert s["test_error"] is not None and 0 <= s["test_error"] <= 100
    with pytest.raises(ValueError, match="lr_scale"):
        from_sources(None, {"lr_scale": "bogus"})
