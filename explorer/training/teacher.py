"""The teacher of ``--method kd``: a finished run's model, loaded from its folder without executing code.

``--teacher RUN_DIR`` names a run folder whose status is ``finished``; its ``model.safetensors`` and card are read by
``explorer.checkpoints.load_checkpoint`` (safetensors + JSON, nothing unpickled), so the teacher may be any model
the tool builds (a ResNet-18 teacher for a small_cnn student). It must answer the student's dataset: the same
class count, channels and image size. Every refusal is a ``ConfigError`` with one line (exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from explorer.checkpoints import CheckpointError, load_checkpoint
from explorer.evaluate import check_compatible
from explorer.training.config import ConfigError, TrainConfig
from explorer.training.runfolder import STATUS, read_json

__all__ = ["load_teacher", "teacher_forward"]


def load_teacher(cfg: TrainConfig, dataset, device: torch.device) -> nn.Module:
    """The model of the finished run ``cfg.teacher``, on ``device`` in eval mode, frozen; ``ConfigError`` (one line)
    when the folder is not a finished run or its model does not fit ``dataset``."""
    if not cfg.teacher:
        raise ConfigError(f"--method {cfg.method} needs --teacher RUN_DIR, the folder of a finished run to distil from")
    run_dir = Path(cfg.teacher).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"--teacher {cfg.teacher}: no such run folder")
    state = read_json(run_dir / STATUS).get("state", "unknown")
    if state != "finished":
        raise ConfigError(f"--teacher {cfg.teacher}: not a finished run (its status is {state}); the teacher must be "
                          f"a run that finished all its epochs")
    try:
        teacher = load_checkpoint(run_dir, device)
        check_compatible(teacher.card, dataset)
    except (CheckpointError, ValueError) as exc:
        raise ConfigError(f"--teacher {cfg.teacher}: {exc}") from None
    teacher.model.requires_grad_(False)
    return teacher.model


def teacher_forward(model: nn.Module, normalize: Callable[[Tensor], Tensor],
                    device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 images -> the teacher's fp32 logits, without gradients, in eval mode (its BatchNorm statistics fixed)."""

    def forward(images: Tensor) -> Tensor:
        with torch.no_grad():
            return model(normalize(images.to(device))).float()

    return forward
