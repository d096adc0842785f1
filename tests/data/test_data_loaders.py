"""Loaders: CIFAR-10/100, MNIST, embedded digits, the registry, downloads (all on fake files)."""
import doctest
import hashlib
import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qtrain.data import DATASETS, DownloadError, InMemoryDataset, load_dataset
from qtrain.data import cifar as cifar_mod
from qtrain.data.base import channel_stats
from qtrain.data.cifar import extract_archive
from qtrain.data.mnist import read_idx

from data_fakes import make_cifar10, make_cifar100, make_mnist, make_tar_gz, write_idx

SHARED = Path(os.environ.get("QTRAIN_DATA", "/nonexistent"))  # a folder holding cifar10/ and mnist/ (optional)


def test_registry_names():
    assert DATASETS == ("cifar10", "cifar100", "mnist", "imagenet", "digits")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match=r"'nope'.*cifar10, cifar100, mnist, imagenet, digits"):
        load_dataset("nope")


@pytest.mark.parametrize("layout", ["cifar-10-batches-py", "cifar10", "."])
def test_cifar10_layouts(tmp_path, layout):
    folder = tmp_path / layout
    dicts = make_cifar10(folder, n=12)
    ds = load_dataset("cifar10", tmp_path)
    assert isinstance(ds, InMemoryDataset) and ds.name == "cifar10" and ds.augment
    assert ds.train_x.shape == (60, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (12, 3, 32, 32) and ds.test_y.dtype == torch.int64
    assert ds.num_classes == 10
    # order and CHW layout: first train image is batch 1 row 0, R plane first
    np.testing.assert_array_equal(ds.train_x[0].numpy().reshape(-1), dicts[0][b"data"][0])
    np.testing.assert_array_equal(ds.train_x[12].numpy().reshape(-1), dicts[1][b"data"][0])
    assert ds.train_y[:12].tolist() == dicts[0][b"labels"]
    assert ds.test_y.tolist() == dicts[5][b"labels"]
    # stats computed from the train split
    ref = ds.train_x.double() / 255
    assert np.allclose(ds.mean, ref.mean(dim=(0, 2, 3)).tolist(), atol=1e-5)
    assert np.allclose(ds.std, ref.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-5)
    # data_dir may also point straight at the folder
    assert torch.equal(load_dataset("cifar10", folder).train_x, ds.train_x)


def test_cifar100(tmp_path):
    tr, te = make_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.augment
    assert ds.train_x.shape == (30, 3, 32, 32) and ds.test_x.shape == (15, 3, 32, 32)
    assert ds.train_y.tolist() == tr[b"fine_labels"]


def test_missing_dataset_error_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "download" in msg and "cifar-10-python.tar.gz" in msg
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        load_dataset("mnist", tmp_path)


def test_incomplete_cifar_folder(tmp_path):
    make_cifar10(tmp_path)
    os.unlink(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    make_cifar10(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", tmp_path)


def _fake_archive(tmp_path):
    src = tmp_path / "src"
    make_cifar10(src, n=4)
    archive = make_tar_gz(src, "cifar-10-batches-py", tmp_path / "fake.tar.gz")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_and_extracts(tmp_path, monkeypatch):
    archive, md5 = _fake_archive(tmp_path)
    monkeypatch.setitem(cifar_mod.CIFAR10, "url", archive.as_uri())
    monkeypatch.setitem(cifar_mod.CIFAR10, "md5", md5)
    root = tmp_path / "root"
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", root)  # no download unless asked
    ds = load_dataset("cifar10", root, download=True)
    assert ds.train_x.shape == (20, 3, 32, 32)
    assert (root / "cifar-10-batches-py" / "test_batch").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_download_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = _fake_archive(tmp_path)
    monkeypatch.setitem(cifar_mod.CIFAR10, "url", archive.as_uri())
    monkeypatch.setitem(cifar_mod.CIFAR10, "md5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        load_dataset("cifar10", root, download=True)
    assert list(root.iterdir()) == []


def test_download_network_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(cifar_mod.CIFAR10, "url", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(DownloadError, match="could not download") as e:
        load_dataset("cifar10", tmp_path / "root", download=True)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_extract_refuses_path_traversal(tmp_path):
    import io
    import tarfile
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DownloadError, match="unsafe"):
        extract_archive(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
def test_mnist(tmp_path, gz, layout):
    arrays = make_mnist(tmp_path / layout, gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert not ds.augment and ds.num_classes == 10 and len(ds.mean) == 1
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(p)
    write_idx(p, np.zeros((3, 2), np.uint8), gz=False)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="payload"):
        read_idx(p)


def test_digits_embedded():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1497, 1, 8, 8) and ds.test_x.shape == (300, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert not ds.augment and ds.num_classes == 10
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    # values are round(v * 255 / 16) for v in 0..16
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(torch.unique(ds.train_x).tolist()) <= allowed
    assert torch.bincount(ds.train_y).tolist() == [151, 151, 149, 152, 148, 152, 150, 149, 146, 149]
    assert ds.mean == pytest.approx((0.305223,), abs=1e-6)


def test_channel_stats_exact():
    x = torch.tensor([0, 51, 255, 255], dtype=torch.uint8).view(1, 1, 2, 2).repeat(3, 2, 1, 1)
    mean, std = channel_stats(x)
    ref = x[:, 0].double() / 255
    assert mean == pytest.approx((float(ref.mean()),) * 2, abs=1e-6)
    assert std == pytest.approx((float(ref.std(unbiased=False)),) * 2, abs=1e-6)


@pytest.mark.parametrize("name", ["qtrain.data", "qtrain.data.base", "qtrain.data.augment",
                                  "qtrain.data.loader", "qtrain.data.embedded"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="set QTRAIN_DATA to a folder with the real cifar10/ and mnist/")
def test_real_cifar10_and_mnist():
    ds = load_dataset("cifar10", SHARED)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.train_y[:10000]).tolist() == [1005, 974, 1032, 1016, 999, 937,
                                                           1030, 1001, 1025, 981]
    assert ds.mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=2e-4)
    m = load_dataset("mnist", SHARED / "mnist")
    assert m.train_x.shape == (60000, 1, 28, 28)
    assert torch.bincount(m.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                 974, 1009]
    assert m.mean[0] == pytest.approx(0.1307, abs=1e-4) and m.std[0] == pytest.approx(0.3081, abs=1e-4)
