"""Segmentation and detection models around a classification backbone, from torchvision's heads.

- Segmentation: torchvision's ``FCN`` with an ``FCNHead`` (3x3 conv to a quarter of the channels, BN, ReLU,
  dropout, 1x1 conv to background + the classes) on the backbone's last features, upsampled bilinearly to the
  image; or ``DeepLabV3`` with a ``DeepLabHead`` whose atrous rates (2, 4, 6) fit a 16x16 feature map.
  Trained with pixel-wise cross-entropy (``scenes.IGNORE`` pixels left out).
- Detection: torchvision's ``FCOS`` (anchor-free: one point per feature cell, whose "anchor" size is the
  backbone's stride, torchvision's convention of centre sampling within 1.5 cells). A 1x1 convolution (the neck)
  maps the backbone's features to ``NECK_CHANNELS`` for an ``FCOSHead`` of two convolutions per branch. Images keep
  their size (FCOS's transform neither resizes nor pads a scene whose side is a multiple of the stride), are
  normalised with the backbone's statistics, and detections above score 0.05 are kept, up to 100 per image
  (COCO's evaluation setting).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.data import normalize_images
from explorer.data.scenes import IGNORE
from explorer.transfer.backbones import Backbone

__all__ = ["HEADS", "NECK_CHANNELS", "TASKS", "DenseModel", "build_dense_model"]

TASKS = ("segmentation", "detection")
HEADS = {"segmentation": ("fcn", "deeplabv3"), "detection": ("fcos",)}  # the first is the default
NECK_CHANNELS = 96
SCORE_THRESHOLD, DETECTIONS_PER_IMAGE = 0.05, 100


class _Features(nn.Module):
    """The backbone as torchvision's segmentation models call it: a dict with the features under "out"."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict(out=self.features(x))


class _Neck(nn.Module):
    """Backbone, then a 1x1 conv to ``NECK_CHANNELS``: the feature map FCOS's head reads (``out_channels``)."""

    def __init__(self, features: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.features = features
        self.project = nn.Sequential(nn.Conv2d(in_channels, NECK_CHANNELS, 1), nn.ReLU(inplace=True))
        self.out_channels = NECK_CHANNELS

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.features(x))


class DenseModel(nn.Module):
    """A segmentation or detection network and how to feed it uint8 images: ``loss`` for training, ``predict``."""

    def __init__(self, task: str, net: nn.Module, backbone: nn.Module, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.task, self.net, self.mean, self.std = task, net, tuple(mean), tuple(std)
        self.backbone = [backbone]  # a list: the same parameters as net's, not registered twice

    def freeze_backbone(self) -> None:
        """Fix the backbone: no gradients, BatchNorm statistics kept (call after every ``train()``)."""
        backbone = self.backbone[0]
        backbone.requires_grad_(False)
        backbone.eval()

    def loss(self, images: Tensor, masks: Tensor | None = None, targets: list[dict[str, Tensor]] | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch (uint8 images; masks for segmentation, targets for detection) and its
        named parts."""
        if self.task == "segmentation":
            logits = self.net(normalize_images(images, self.mean, self.std))["out"].float()
            loss = F.cross_entropy(logits, masks.long(), ignore_index=IGNORE)
            return loss, {"ce": loss.detach()}
        parts = self.net(list(images.float() / 255.0), targets)
        return sum(parts.values()), {name: value.detach() for name, value in parts.items()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor | list[dict[str, Tensor]]:
        """Segmentation: class masks [N, H, W] (0 background, k + 1 class k). Detection: per image a dict of
        ``boxes`` (xyxy), ``scores`` and ``labels`` (object classes)."""
        if self.task == "segmentation":
            return self.net(normalize_images(images, self.mean, self.std))["out"].argmax(1)
        return self.net(list(images.float() / 255.0))


def build_dense_model(task: str, head: str, backbone: Backbone, num_classes: int, image_size: tuple[int, int]
                      ) -> DenseModel:
    """The ``head`` network for ``task`` on ``backbone`` (``num_classes`` object classes)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.models.segmentation import FCN, DeepLabV3
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    from torchvision.models.segmentation.fcn import FCNHead

    if head not in HEADS.get(task, ()):
        raise ValueError(f"head {head!r} does not do {task}; choose one of {', '.join(HEADS.get(task, ()))}")
    channels = backbone.out_channels
    if head == "fcn":
        net = FCN(_Features(backbone.features), FCNHead(channels, num_classes + 1))
    elif head == "deeplabv3":
        net = DeepLabV3(_Features(backbone.features), DeepLabHead(channels, num_classes + 1, atrous_rates=(2, 4, 6)))
    else:
        side = max(image_size)
        net = FCOS(_Neck(backbone.features, channels), num_classes, min_size=min(image_size), max_size=side,
                   image_mean=list(backbone.mean), image_std=list(backbone.std), size_divisible=backbone.stride,
                   anchor_generator=AnchorGenerator(((backbone.stride,),), ((1.0,),)),
                   head=FCOSHead(NECK_CHANNELS, 1, num_classes, num_convs=2), score_thresh=SCORE_THRESHOLD,
                   detections_per_img=DETECTIONS_PER_IMAGE)
    return DenseModel(task, net, backbone.features, backbone.mean, backbone.std)
