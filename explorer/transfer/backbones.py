"""Backbones from classification runs: the convolutional trunk of a trained classifier, its head dropped.

Which layers become the backbone (``BACKBONE_LAYERS``):

- ``small_cnn``: ``block1``, ``block2``, ``block3`` (two 2x2 max-pools: 128 channels at stride 4); the global pool and
  the linear head are dropped.
- ``resnet18`` (CIFAR stem): ``conv1``, ``bn1``, ``relu``, ``layer1`` to ``layer4`` (512 channels at stride 8); the
  average pool and ``fc`` are dropped.

Other architectures are refused (``BackboneError``): their strides (32 for torchvision's ImageNet models) leave a
64-pixel scene a 2x2 feature map. The backbone is normalised as the classifier was (the card's mean and std), so its
features see the inputs they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from explorer.checkpoints import CheckpointError, load_card, load_checkpoint
from explorer.training.runfolder import CONFIG, read_json

__all__ = ["BACKBONE_LAYERS", "Backbone", "BackboneError", "backbone_of", "load_backbone", "wrap_backbone"]

BACKBONE_LAYERS = {"small_cnn": ("block1", "block2", "block3"),
                   "resnet18": ("conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4")}
_SHAPES = {"small_cnn": (128, 4), "resnet18": (512, 8)}  # out channels, stride


class BackboneError(ValueError):
    """A run that cannot serve as a backbone; the message says why."""


@dataclass
class Backbone:
    """A classifier's trunk and what a head needs to know of it."""

    features: nn.Sequential  # images [B, C, H, W] -> features [B, out_channels, H / stride, W / stride]
    out_channels: int
    stride: int
    architecture: str
    in_channels: int
    mean: tuple[float, ...]  # the normalisation its classifier trained with
    std: tuple[float, ...]
    card: dict[str, Any]  # the classification run's model card
    run_id: str


def backbone_of(model: nn.Module, architecture: str) -> nn.Sequential:
    """The layers of ``model`` (a ``small_cnn`` or ``resnet18`` as ``explorer.models`` builds them) that make its
    backbone, in order, as one module (the same parameter objects: training one trains the other)."""
    if architecture not in BACKBONE_LAYERS:
        raise BackboneError(f"a {architecture} cannot serve as a backbone here; transfer takes a run of "
                            f"{' or '.join(BACKBONE_LAYERS)}")
    return nn.Sequential(*(getattr(model, name) for name in BACKBONE_LAYERS[architecture]))


def load_backbone(run_dir: Path | str) -> Backbone:
    """The backbone of the classification run (or checkpoint folder) ``run_dir``; ``BackboneError`` when it has no
    readable classifier checkpoint or its architecture cannot serve."""
    run_dir = Path(run_dir).expanduser()
    try:
        card = load_card(run_dir)
        if card.get("task"):
            raise BackboneError(f"--backbone {run_dir} is a {card['task']} run; give a classification run")
        architecture = card["model"]
        if architecture not in BACKBONE_LAYERS:
            raise BackboneError(f"--backbone {run_dir} is a {architecture}, which cannot serve as a backbone here; "
                                f"transfer takes a run of {' or '.join(BACKBONE_LAYERS)}")
        checkpoint = load_checkpoint(run_dir)
    except CheckpointError as exc:
        raise BackboneError(f"--backbone {run_dir}: {exc}") from None
    run_id = read_json(run_dir / CONFIG).get("run_id") or run_dir.resolve().name
    return wrap_backbone(checkpoint.model.train(), card, run_id)


def wrap_backbone(model: nn.Module, card: dict[str, Any], run_id: str) -> Backbone:
    """The ``Backbone`` of the classifier ``model`` whose model card is ``card``."""
    architecture = card["model"]
    channels, stride = _SHAPES[architecture]
    return Backbone(backbone_of(model, architecture), channels, stride, architecture, int(card["in_channels"]),
                    tuple(card["mean"]), tuple(card["std"]), card, run_id)
