"""Classification models by name, each knowing which of its layers Grad-CAM should look at.

- ``small_cnn`` (default): three conv blocks and a linear head, ~94k parameters; trains on mnist5k on a
  laptop CPU in about a minute. Global average pooling makes it work for any input size (8x8 digits too).
- ``resnet18``: torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool), the
  usual choice for 32x32 inputs.
- any other torchvision classification model by its name (``resnet50``, ``mobilenet_v3_small``, ...),
  built without pretrained weights, its first conv adapted to the dataset's channel count.

``cam_layers(model)`` lists the conv blocks Grad-CAM can use, the recommended one first.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MODELS", "ModelError", "SmallCNN", "build_model", "cam_layers"]

MODELS = ("small_cnn", "resnet18", "<any torchvision classification model>")


class ModelError(ValueError):
    """A model name or shape that cannot be built; the message says what is allowed."""


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                               nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """conv32-pool, conv64-pool, conv128, global average pool, linear."""

    cam_layer_names = ("block3", "block2", "block1")

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.block1 = _conv_block(in_channels, width, pool=True)
        self.block2 = _conv_block(width, 2 * width, pool=True)
        self.block3 = _conv_block(2 * width, 4 * width, pool=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.head(self.pool(x).flatten(1))


def _resnet18_cifar(in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d by one taking ``in_channels`` (torchvision models expect RGB)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    setattr(parent, name, nn.Conv2d(in_channels, child.out_channels, child.kernel_size,
                                                    child.stride, child.padding, child.dilation, child.groups,
                                                    child.bias is not None))
                return


def _torchvision_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(f"unknown model {name!r}; use small_cnn, resnet18 or a torchvision classification "
                         f"model such as {', '.join(sorted(available)[:6])}, ...")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"torchvision cannot build {name!r} for {num_classes} classes: {exc}") from None
    _adapt_first_conv(model, in_channels)
    return model


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """Build a freshly initialised model for ``in_channels``-channel images and ``num_classes`` classes."""
    if name == "small_cnn":
        return SmallCNN(in_channels, num_classes)
    if name == "resnet18":
        return _resnet18_cifar(in_channels, num_classes)
    return _torchvision_model(name, in_channels, num_classes)


def cam_layers(model: nn.Module) -> list[str]:
    """Names of the modules Grad-CAM can target, the recommended (deepest) block first.

    Our models declare them; for torchvision models: ResNet-style ``layer4..layer1``, else the children of
    ``features`` (VGG, MobileNet, EfficientNet, DenseNet), else every Conv2d, deepest first.
    """
    declared = getattr(model, "cam_layer_names", None)
    if declared:
        return list(declared)
    names = dict(model.named_modules())
    resnet_layers = [n for n in ("layer4", "layer3", "layer2", "layer1") if n in names]
    if resnet_layers:
        return resnet_layers
    if "features" in names:
        blocks = [f"features.{n}" for n, m in names["features"].named_children()
                  if any(isinstance(x, nn.Conv2d) for x in m.modules())]
        if blocks:
            return blocks[::-1]
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[::-1]
