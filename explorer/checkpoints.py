"""Checkpoints: weights in safetensors with the model card inside, never pickled code.

A checkpoint is a folder with ``model.safetensors`` and ``card.json``. The card (dataset, model, method,
hyper-parameters, test metrics, the command that made it) is also stored as the safetensors metadata, so
the single ``model.safetensors`` file is the source of truth and is replaced atomically: a kill at any
moment leaves either the previous checkpoint or the new one, never a mix. ``card.json`` is a readable copy.

A card is checked before any model is built: the fields a model is built from, and those the app shows, have
their types and ranges (``_check_card``), and the model the card names is built on the meta device (no memory) and
its parameter shapes compared with the weights file's header, so a crafted card (a billion classes, a ViT over small
weights) is refused in milliseconds with the file and field named. Refusals are remembered per weights-file
version (``_refusal``), so a client asking again does not cost the check again.
"""

from __future__ import annotations

import functools
import json
import numbers
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from explorer.models import ModelError, build_model

__all__ = ["Checkpoint", "CheckpointError", "atomic_save_tensors", "atomic_write_text", "load_card",
           "load_checkpoint", "save_checkpoint", "WEIGHTS", "CARD"]

WEIGHTS = "model.safetensors"
CARD = "card.json"
_REQUIRED = ("model", "dataset", "in_channels", "num_classes", "class_names", "mean", "std", "image_size")
MAX_CLASSES, MAX_CHANNELS, MAX_SIDE = 100_000, 4, 4096


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
    missing = [k for k in _REQUIRED if k not in card] if isinstance(card, dict) else list(_REQUIRED)
    if missing:
        raise CheckpointError(f"the model card of {weights} lacks {missing}")
    problem = _check_card(card)
    if problem:
        raise CheckpointError(f"the model card of {weights}: {problem}")
    return card


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _numbers(value: Any, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))


def _plain_text(value: Any) -> bool:
    """A name the app may show in its Markdown: 1 to 200 characters, no '<' or '>' (card text is data, never HTML)."""
    return isinstance(value, str) and 0 < len(value) <= 200 and "<" not in value and ">" not in value


def _check_card(card: dict[str, Any]) -> str | None:
    """What is wrong with the fields a model is built from and its inputs prepared with, or with those the app shows
    of it (its test metrics and method), or None."""
    channels, classes = card["in_channels"], card["num_classes"]
    checks = [
        (_plain_text(card["model"]), "model", "a model name"),
        (_plain_text(card["dataset"]), "dataset", "a dataset name"),
        (_whole(channels, 1, MAX_CHANNELS), "in_channels", f"a whole number from 1 to {MAX_CHANNELS}"),
        (_whole(classes, 2, MAX_CLASSES), "num_classes", f"a whole number from 2 to {MAX_CLASSES}"),
        (isinstance(card["class_names"], list) and len(card["class_names"]) == classes
         and all(_plain_text(n) for n in card["class_names"]), "class_names", "num_classes names"),
        (_numbers(card["mean"], channels if isinstance(channels, int) else -1), "mean", "one number per channel"),
        (_numbers(card["std"], channels if isinstance(channels, int) else -1)
         and all(v > 0 for v in card["std"]), "std", "one positive number per channel"),
        (isinstance(card["image_size"], list) and len(card["image_size"]) == 2
         and all(_whole(v, 1, MAX_SIDE) for v in card["image_size"]), "image_size",
         f"[height, width] up to {MAX_SIDE}"),
    ]
    metrics, method = card.get("test_metrics", {}), card.get("method", "")  # what the pickers and tables show
    checks += [
        (isinstance(metrics, dict) and all(isinstance(k, str) and _numbers([v], 1) for k, v in metrics.items()),
         "test_metrics", "metric names with numbers"),
        (method == "" or _plain_text(method), "method", "a method name"),
    ]
    for ok, name, expected in checks:
        if not ok:
            return f"{name} must be {expected}; got {str(card[name])[:80]!r}"
    return None


@functools.lru_cache(maxsize=64)
def _refusal(weights: str, version: tuple[int, int]) -> str | None:
    """Why the weights file at ``weights`` (this version of it) cannot be loaded, or None; computed once per
    version: the card's checks, then the model built on the meta device against the file's tensor shapes."""
    try:
        card = load_card(weights)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(card["model"], card["in_channels"],
                                                                   card["num_classes"]).state_dict().items()}
        with safe_open(weights, framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (CheckpointError, ModelError) as exc:
        return str(exc)
    except (SafetensorError, OSError) as exc:
        return f"{weights} could not be read ({type(exc).__name__}: {exc})"
    if stored != expected:
        differ = sorted(set(stored) ^ set(expected)) or [k for k in expected if stored[k] != expected[k]]
        return (f"the weights in {weights} do not fit a {card['model']} with {card['in_channels']} channels and "
                f"{card['num_classes']} classes (first difference: {differ[0]})")
    return None


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model named by the card and load its weights (no code is executed from the file)."""
    weights = _weights_file(path)
    stat = weights.stat()
    problem = _refusal(str(weights), (stat.st_mtime_ns, stat.st_size))
    if problem:
        raise CheckpointError(problem)
    card = load_card(weights)
    model = build_model(card["model"], int(card["in_channels"]), int(card["num_classes"]))
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except (RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"the weights in {weights} do not fit a {card['model']}: {exc}") from None
    return Checkpoint(model.to(device).eval(), card, weights.parent)
