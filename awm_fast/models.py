"""Plain PyTorch classifiers used by the tests, the demo and the studies.

All models take float images [N, C, H, W] and return logits float [N, num_classes]. They use ordinary
nn.Conv2d / nn.Linear / nn.BatchNorm2d layers so that purification can mask their weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "MODELS", "BasicBlock", "CifarResNet", "LeNet5", "ResNet18Cifar", "SmallCNN", "build_model",
           "small_resnet"]

MODELS = ("small-cnn", "small-resnet", "resnet18-cifar", "lenet", "mlp")


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class SmallCNN(nn.Module):
    """3 x (conv3x3 -> BN -> ReLU) with 2x2 max-pooling after the first two, then Linear(., 128) -> ReLU -> Linear.

    Channels: width, 2*width, 2*width. Spatial size: image_size -> image_size//2 -> image_size//4, i.e.
    8 -> 2 (digits), 28 -> 7 (Fashion-MNIST), 32 -> 8 (CIFAR-10/GTSRB). Input [N, in_channels, S, S].
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 32) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"SmallCNN needs image_size >= 4 (two 2x2 poolings), got {image_size}")
        self.image_size = image_size
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 2 * width),
        )
        final_size = image_size // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * final_size * final_size, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeCun et al.'s LeNet-5 with ReLU and max-pooling: no BatchNorm, 5x5 kernels, biases everywhere.

    conv5x5(6, padding 2) -> ReLU -> pool -> conv5x5(16) -> ReLU -> pool -> Linear(120) -> Linear(84) -> Linear.
    Spatial size: S -> S//2 -> S//2 - 4 -> (S//2 - 4)//2, i.e. 28 -> 5 (Fashion-MNIST), 32 -> 6. Input
    [N, in_channels, S, S] with S >= 12.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        if image_size < 12:
            raise ValueError(f"LeNet5 needs image_size >= 12 (a 5x5 convolution after a 2x2 pooling), got {image_size}")
        final_size = (image_size // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * final_size * final_size, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """A convolution-free classifier: Flatten -> Linear(hidden[0]) -> ReLU -> ... -> Linear(num_classes).

    Input [N, in_channels, S, S] (any shape whose trailing C·H·W is input_numel). No Conv2d, so purify masks its
    Linear weights (mask_layers=None resolves to "linear" on such a model).
    """

    def __init__(self, input_numel: int, num_classes: int = 10, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        widths = [input_numel, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two conv3x3+BN with an identity (or 1x1 conv+BN projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem (no max-pool), one stage per width (stride 1 then 2), global average pool.

    ``blocks_per_stage`` and ``widths`` have one entry per stage. Works for any input size >= 1 pixel per
    stage because of the adaptive average pool.
    """

    def __init__(
        self, blocks_per_stage: Sequence[int], widths: Sequence[int], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths) or not widths:
            raise ValueError("blocks_per_stage and widths need the same, non-zero length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, channels = [], widths[0]
        for stage_index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class ResNet18Cifar(CifarResNet):
    """ResNet-18 for 32x32 inputs (He et al. 2016, CIFAR variant): BasicBlocks [2, 2, 2, 2], widths 64..512."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__((2, 2, 2, 2), (64, 128, 256, 512), num_classes=num_classes, in_channels=in_channels)


def small_resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> CifarResNet:
    """An 8-layer ResNet for fast studies: stem conv + 3 stages of one BasicBlock (width, 2w, 4w) + fc."""
    return CifarResNet((1, 1, 1), (width, 2 * width, 4 * width), num_classes=num_classes, in_channels=in_channels)


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a model by name (one of :data:`MODELS`). ``image_size`` matters only for "small-cnn", "lenet" and "mlp"."""
    if name == "small-cnn":
        return SmallCNN(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    if name == "small-resnet":
        return small_resnet(num_classes=num_classes, in_channels=in_channels)
    if name == "resnet18-cifar":
        return ResNet18Cifar(num_classes=num_classes, in_channels=in_channels)
    if name == "lenet":
        return LeNet5(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes=num_classes)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
