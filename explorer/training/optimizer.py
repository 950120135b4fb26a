"""The optimiser and its learning-rate schedule.

SGD with Nesterov momentum 0.9 and weight decay, the optimiser of CS-KD's and Self-KD-Lib's CIFAR runs. On CUDA
it is the fused kernel (one launch per step, and the fp16 loss scaler needs no host sync with it); elsewhere the
foreach implementation, which does exactly the arithmetic of the plain one, so CPU runs stay bit-identical.

The learning rate is set at every step (``LambdaLR`` stepped per optimiser step), as a factor of ``--lr``:

- ``--warmup-epochs W``: linear warm-up, step s of the first W epochs gets (s + 1) / (W x steps per epoch), so
  the last warm-up step reaches ``--lr`` (Self-KD-Lib's warm-up);
- ``--schedule cosine`` (default): then half a cosine from 1 to 0 over the remaining steps;
- ``--schedule step``: then ``--gamma`` to the power of the number of ``--milestones`` already passed, counted in
  finished epochs from the start of training (``torch.optim.lr_scheduler.MultiStepLR``'s convention: milestone
  100 lowers the rate from the 101st epoch on).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch
from torch import nn

from explorer.training.config import TrainConfig, milestone_epochs

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """SGD, Nesterov momentum 0.9, ``--lr`` and ``--weight-decay``; fused on CUDA, foreach elsewhere."""
    implementation = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay,
                           **implementation)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) as a fraction of ``--lr``."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        return cfg.gamma ** bisect.bisect_right(milestone_epochs(cfg.milestones), step // steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr_factor`` as a scheduler stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, steps_per_epoch))
