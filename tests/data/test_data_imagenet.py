"""ImageFolderDataset on a tiny fake train/ + val/ folder of generated JPEGs."""
import pytest
import torch

from qtrain.data import ImageFolderDataset, batches, load_dataset, num_batches

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def image_root(tmp_path):
    g = torch.Generator().manual_seed(0)
    sizes = [(300, 260), (180, 240), (256, 256)]
    for split, per_class in (("train", 3), ("val", 2)):
        for c, wnid in enumerate(["n001", "n002"]):
            d = tmp_path / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for i in range(per_class):
                w, h = sizes[(i + c) % 3]
                arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
                PIL.fromarray(arr).save(d / f"img{i}.JPEG", quality=90)
            (d / "notes.txt").write_text("not an image")
    return tmp_path


def test_load_imagenet_folder(image_root):
    ds = load_dataset("imagenet", image_root)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.num_classes == 2 and ds.classes == ("n001", "n002") and ds.augment
    assert len(ds.train_files) == 6 and len(ds.test_files) == 4
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.dtype == torch.int64
    assert num_batches(ds, "train", 4) == 1 and num_batches(ds, "test", 4) == 1


def test_imagenet_batches_shapes_and_determinism(image_root):
    ds = load_dataset("imagenet", image_root / "imagenet")
    kw = dict(shuffle=True, augment=True, seed=3, epoch=1, num_workers=0)
    a = list(batches(ds, "train", 4, **kw))
    b = list(batches(ds, "train", 4, **kw))
    assert len(a) == 1 and a[0][0].shape == (4, 3, 224, 224) and a[0][0].dtype == torch.float32
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
    # ranks split the global batch contiguously and agree with the single-process batch
    r = [list(batches(ds, "train", 4, rank=k, world_size=2, **kw))[0] for k in range(2)]
    assert torch.equal(torch.cat([r[0][0], r[1][0]]), a[0][0])
    val = list(batches(ds, "test", 3, shuffle=False, augment=False, seed=0, epoch=0,
                       num_workers=0))
    assert [len(y) for _, y in val] == [3, 1]
    assert val[0][0].shape == (3, 3, 224, 224) and val[0][1].tolist() == [0, 0, 1]


def test_imagenet_missing(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="ImageNet not found"):
        load_dataset("imagenet", tmp_path)


def test_eval_transform_is_resize_then_center_crop(tmp_path):
    from qtrain.data.imagenet import _random_resized_crop_box, load_image
    arr = torch.randint(0, 256, (256, 256, 3), dtype=torch.uint8).numpy()
    PIL.fromarray(arr).save(tmp_path / "a.png")
    out = load_image(str(tmp_path / "a.png"), train=False, seed=0)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    assert torch.equal(out, torch.from_numpy(arr[16:240, 16:240]).permute(2, 0, 1))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, w, h = _random_resized_crop_box(300, 200, g)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 200
        assert 0.08 * 60000 * 0.95 <= w * h <= 60000
