"""Model definitions: output shapes for every supported input size, architecture facts, name dispatch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from awm_fast.models import MLP, MODELS, LeNet5, ResNet18Cifar, SmallCNN, build_model, small_resnet


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("in_channels, image_size", [(1, 8), (1, 28), (3, 32)])
def test_small_cnn_output_shape_and_layers(in_channels, image_size):
    torch.manual_seed(0)
    model = SmallCNN(in_channels=in_channels, num_classes=7, image_size=image_size, width=8).eval()
    logits = model(torch.rand(3, in_channels, image_size, image_size))
    assert logits.shape == (3, 7) and logits.dtype == torch.float32
    assert _count(model, nn.Conv2d) == 3 and _count(model, nn.BatchNorm2d) == 3
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and linears[0].out_features == 128 and linears[1].in_features == 128
    # two 2x2 poolings: flattened features = 2*width * (image_size // 4)^2
    assert linears[0].in_features == 16 * (image_size // 4) ** 2
    assert all(conv.kernel_size == (3, 3) for conv in model.modules() if isinstance(conv, nn.Conv2d))


def test_small_cnn_rejects_too_small_images():
    with pytest.raises(ValueError, match="image_size"):
        SmallCNN(image_size=3)


def test_resnet18_cifar_architecture():
    model = ResNet18Cifar(num_classes=10, in_channels=3)
    # the well-known parameter count of the CIFAR ResNet-18 with 10 classes
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    # stem + 16 block convs + 3 projection shortcuts; no max-pool
    assert _count(model, nn.Conv2d) == 20 and _count(model, nn.MaxPool2d) == 0
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert model.fc.in_features == 512
    logits = model.eval()(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    grey = ResNet18Cifar(num_classes=43, in_channels=1).eval()
    assert grey(torch.rand(1, 1, 32, 32)).shape == (1, 43)


@pytest.mark.parametrize("in_channels, image_size", [(1, 8), (1, 28), (3, 32)])
def test_small_resnet_has_eight_weight_layers(in_channels, image_size):
    model = small_resnet(num_classes=10, in_channels=in_channels, width=16).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    # 1 stem conv + 3 blocks x 2 convs + 1 fc = 8 weight layers (the 1x1 projections are not counted)
    assert len(convs) + _count(model, nn.Linear) == 8
    assert [c.out_channels for c in convs] == [16, 16, 16, 32, 32, 64, 64]
    assert model(torch.rand(2, in_channels, image_size, image_size)).shape == (2, 10)


def test_lenet5_layers_shapes_and_its_size_check():
    # LeNet-5's parameter count on 28x28, written out: conv 1*6*25+6, conv 6*16*25+16, fc 400*120+120, 120*84+84,
    # 84*10+10 = 156 + 2416 + 48120 + 10164 + 850
    model = LeNet5(1, 10, 28)
    assert sum(p.numel() for p in model.parameters()) == 61706
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert LeNet5(3, 43, 32)(torch.rand(1, 3, 32, 32)).shape == (1, 43)
    with pytest.raises(ValueError, match="image_size >= 12"):
        LeNet5(1, 10, 8)


def test_mlp_layers_shapes_and_no_convolution():
    # 784*256+256, 256*128+128, 128*10+10 on 28x28, written out
    model = MLP(28 * 28)
    assert sum(p.numel() for p in model.parameters()) == 200960 + 32896 + 1290
    assert _count(model, nn.Linear) == 3 and _count(model, nn.Conv2d) == 0
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert MLP(3 * 32 * 32, 43, hidden=(64,))(torch.rand(1, 3, 32, 32)).shape == (1, 43)


def test_models_train_step_reaches_every_parameter():
    torch.manual_seed(0)
    for name in MODELS[:2]:
        model = build_model(name, in_channels=1, num_classes=10, image_size=8).train()
        loss = nn.functional.cross_entropy(model(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_build_model_by_name():
    assert MODELS == ("small-cnn", "small-resnet", "resnet18-cifar", "lenet", "mlp")
    assert isinstance(build_model("small-cnn", 1, 10, 28), SmallCNN)
    assert build_model("mlp", 3, 10, 32)(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert isinstance(build_model("lenet", 1, 10, 28), LeNet5)
    assert isinstance(build_model("resnet18-cifar", 3, 10, 32), ResNet18Cifar)
    assert build_model("small-resnet", 3, 5, 32).fc.out_features == 5
    with pytest.raises(ValueError, match="small-cnn, small-resnet, resnet18-cifar, lenet, mlp"):
        build_model("vgg16", 3, 10, 32)
