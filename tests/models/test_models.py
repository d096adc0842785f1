"""Models: pinned parameter counts, output shapes, architecture facts, a quick training run."""
import doctest
import importlib
import inspect

import pytest
import torch
from torch import nn

from qtrain.models import MODELS, build, num_parameters

# computed once from the implementation (10 classes, 3×32×32 inputs) and pinned
PARAMS_10 = {
    "vgg9": 2_788_298,
    "vggbc": 14_029_716,
    "resnet20": 269_722,
    "resnet56": 853_018,
    "wrn56_2": 3_401_770,
    "resnet18": 11_181_642,
    "smallcnn": 53_794,
    "mlp": 789_258,
}
PARAMS_100 = {"vgg9": 2_811_428, "vggbc": 14_122_056, "resnet20": 275_572,
              "resnet56": 858_868, "wrn56_2": 3_413_380, "resnet18": 11_227_812,
              "smallcnn": 62_524, "mlp": 812_388}
# number of conv layers (what the paper quantizes)
CONVS = {"vgg9": 7, "vggbc": 6, "resnet20": 19, "resnet56": 55, "wrn56_2": 55, "resnet18": 20,
         "smallcnn": 3, "mlp": 0}


def test_registry():
    assert MODELS == ("vgg9", "vggbc", "resnet20", "resnet56", "wrn56_2", "resnet18",
                      "smallcnn", "mlp")
    with pytest.raises(ValueError, match=r"'vgg16'.*vgg9, vggbc, resnet20"):
        build("vgg16", 10)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts(name):
    assert num_parameters(build(name, 10)) == PARAMS_10[name]
    assert num_parameters(build(name, 100)) == PARAMS_100[name]


def test_known_reference_counts():
    # the literature's numbers: ResNet-18 (1000 classes) 11.69M, ResNet-20 0.27M, ResNet-56 0.85M
    assert num_parameters(build("resnet18", 1000)) == 11_689_512


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_backward(name):
    torch.manual_seed(0)
    net = build(name, 7)
    size = 64 if name == "resnet18" else 32
    x = torch.randn(2, 3, size, size)
    out = net(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    assert net(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", MODELS)
def test_convs_have_no_bias(name):
    convs = [m for m in build(name, 10).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == CONVS[name] and all(c.bias is None for c in convs)


def test_vgg9_structure():
    net = build("vgg9", 10)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256]
    fcs = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert fcs == [(4096, 256), (256, 10)]


def test_vggbc_structure():
    net = build("vggbc", 10)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [128, 128, 256, 256, 512, 512]
    fcs = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert fcs == [(8192, 1024), (1024, 1024), (1024, 10)]
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.modules()) == 9


def test_cifar_resnet_widths_and_option_a():
    for name, widths in (("resnet56", {16, 32, 64}), ("wrn56_2", {32, 64, 128})):
        net = build(name, 10)
        assert {m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)} == widths
    # option A: no 1x1 projection convs anywhere
    assert all(m.kernel_size == (3, 3) for m in build("resnet20", 10).modules()
               if isinstance(m, nn.Conv2d))
    # ResNet-18: 7x7 stem + 3 projection shortcuts
    ks = [m.kernel_size for m in build("resnet18", 10).modules() if isinstance(m, nn.Conv2d)]
    assert ks.count((7, 7)) == 1 and ks.count((1, 1)) == 3


@pytest.mark.parametrize("name,c,s", [("smallcnn", 1, 8), ("mlp", 1, 8), ("smallcnn", 1, 28),
                                      ("vgg9", 1, 28), ("resnet20", 1, 28), ("mlp", 3, 32)])
def test_other_input_shapes(name, c, s):
    net = build(name, 10, in_channels=c, image_size=s)
    assert net(torch.randn(3, c, s, s)).shape == (3, 10)


def test_build_kwargs_and_validation():
    assert num_parameters(build("smallcnn", 10, width=8)) < num_parameters(build("smallcnn", 10))
    with pytest.raises(ValueError, match="positive"):
        build("mlp", 0)


def test_models_are_plain_pytorch():
    import qtrain.models as pkg
    from qtrain.models import resnet, small, vgg
    for mod in (pkg, resnet, small, vgg):
        src = inspect.getsource(mod)
        assert "qtrain.optim" not in src and "rounding" not in src and ".optim import" not in src


@pytest.fixture
def one_thread():
    # tiny ops on a shared 2-core machine: OpenMP spin-waits make 2 threads up to 100x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_smallcnn_learns_digits_in_seconds(one_thread):
    from qtrain.data import batches, load_dataset
    torch.manual_seed(0)
    ds = load_dataset("digits")
    net = build("smallcnn", ds.num_classes, in_channels=1, image_size=8, width=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(4):
        net.train()
        for x, y in batches(ds, "train", 64, shuffle=True, augment=False, seed=0, epoch=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(x).argmax(1) == y).sum())
                      for x, y in batches(ds, "test", 100, shuffle=False, augment=False, seed=0,
                                          epoch=0))
    assert correct / 300 > 0.85


@pytest.mark.parametrize("name", ["qtrain.models", "qtrain.models.vgg", "qtrain.models.resnet",
                                  "qtrain.models.small"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
