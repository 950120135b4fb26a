"""Checkpoints: weights in safetensors with the model card inside, never pickled code.

A checkpoint is a folder with ``model.safetensors`` and ``card.json``. The card (dataset, model, method,
hyper-parameters, test metrics, the command that made it) is also stored as the safetensors metadata, so
the single ``model.safetensors`` file is the source of truth and is replaced atomically: a kill at any
moment leaves either the previous checkpoint or the new one, never a mix. ``card.json`` is a readable copy.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from explorer.models import build_model

__all__ = ["Checkpoint", "CheckpointError", "atomic_save_tensors", "atomic_write_text", "load_card",
           "load_checkpoint", "save_checkpoint", "WEIGHTS", "CARD"]

WEIGHTS = "model.safetensors"
CARD = "card.json"
_REQUIRED = ("model", "dataset", "in_channels", "num_classes", "class_names", "mean", "std", "image_size")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module  # in eval mode, on the requested device
    card: dict[str, Any]
    path: Path  # the checkpoint folder


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a file via a temporary sibling and ``os.replace``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a run folder is meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file via a temporary sibling and ``os.replace`` (tensors copied to the CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # safetensors writes the file as 0600; a run folder is meant to be read by others
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on the disk before it replaces the old file, as atomic_write_text does
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: Path | str, model: nn.Module, card: dict[str, Any]) -> Path:
    """Save weights + card into ``folder`` atomically; returns the folder."""
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise CheckpointError(f"model card lacks {missing}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(folder / WEIGHTS, _unwrap(model).state_dict(), {"card": json.dumps(card)})
    atomic_write_text(folder / CARD, json.dumps(card, indent=2) + "\n")
    return folder


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (its state dict keys have no ``module.`` prefix)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _weights_file(path: Path | str) -> Path:
    path = Path(path).expanduser()
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a folder with {WEIGHTS} or a .safetensors file")
    return weights


def load_card(path: Path | str) -> dict[str, Any]:
    """The model card of a checkpoint folder (or its .safetensors file), without loading the weights."""
    weights = _weights_file(path)
    try:
        with safe_open(str(weights), framework="pt") as f:
            card = json.loads((f.metadata() or {})["card"])
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{weights} is not an IPS Explorer checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise CheckpointError(f"the model card of {weights} lacks {missing}")
    return card


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model named by the card and load its weights (no code is executed from the file)."""
    weights = _weights_file(path)
    card = load_card(weights)
    model = build_model(card["model"], int(card["in_channels"]), int(card["num_classes"]))
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except (RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"the weights in {weights} do not fit a {card['model']}: {exc}") from None
    return Checkpoint(model.to(device).eval(), card, weights.parent)
