"""Transfer checkpoints: a transfer run folder (or a copy in checkpoints/) loaded back for prediction.

The card names everything the network is rebuilt from (task, head, the backbone's architecture, channels and
classes, the scenes' classes and size); the network is rebuilt from it and the weights loaded from safetensors, so
nothing in the file runs as code. A card that is no transfer card, weights that do not fit it, or a dataset whose
classes differ from the card's are refused with ``CheckpointError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from explorer.checkpoints import WEIGHTS, CheckpointError, load_card
from explorer.data.scenes import DenseDataset
from explorer.models import ModelError, build_model
from explorer.transfer.backbones import BACKBONE_LAYERS, wrap_backbone
from explorer.transfer.heads import HEADS, DenseModel, build_dense_model

__all__ = ["TransferCheckpoint", "load_transfer_checkpoint"]


@dataclass(frozen=True)
class TransferCheckpoint:
    model: DenseModel  # in eval mode
    card: dict[str, Any]
    path: Path


def _check(card: dict[str, Any], weights: Path, dataset: DenseDataset | None) -> None:
    task, architecture = card.get("task"), card.get("backbone_architecture")
    if task not in HEADS or card.get("head") not in HEADS[task] or architecture not in BACKBONE_LAYERS:
        raise CheckpointError(f"{weights} is not a transfer checkpoint (its card names no task, head and backbone)")
    if dataset is not None and (card["num_classes"] != dataset.num_classes or card["in_channels"] != dataset.channels):
        raise CheckpointError(f"{weights.parent.name} was trained for {card['num_classes']} classes of "
                              f"{card['in_channels']}-channel {card['dataset']} scenes, not for the "
                              f"{dataset.num_classes} classes of {dataset.channels}-channel {dataset.name} scenes")


def load_transfer_checkpoint(path: Path | str, device: torch.device | str = "cpu",
                             dataset: DenseDataset | None = None) -> TransferCheckpoint:
    """The transfer network of ``path`` (a folder with model.safetensors), checked against ``dataset`` if given."""
    folder = Path(path).expanduser()
    weights = folder / WEIGHTS
    card = load_card(folder)
    _check(card, weights, dataset)
    try:
        classifier = build_model(card["backbone_architecture"], card["in_channels"], card["backbone_num_classes"])
        backbone = wrap_backbone(classifier, {**card, "model": card["backbone_architecture"]},
                                 str(card.get("backbone_run_id", "?")))
        model = build_dense_model(card["task"], card["head"], backbone, card["num_classes"],
                                  tuple(card["image_size"]))
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except (ModelError, RuntimeError, SafetensorError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the weights in {weights} do not fit its card: {str(exc).splitlines()[0][:300]}") \
            from None
    return TransferCheckpoint(model.to(device).eval(), card, folder)
