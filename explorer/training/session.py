"""What a run trains with: the ``Session`` that ``loop.setup`` builds and the loop, the recorder and the training
state read, and the stream of anchor indices it draws from. A module of its own so that the recorder and the state,
which the loop calls, need not import the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from explorer.data import Dataset, StreamedDataset
from explorer.ips import ClassIndex
from explorer.training.config import TrainConfig
from explorer.training.methods import MethodContext
from explorer.training.streamed import DataStreams

__all__ = ["AnchorStream", "Session"]


class AnchorStream:
    """Endless anchors: the training indices in random order, one fresh permutation after another."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.generator, self.device = n, generator, device
        self.buffer = torch.empty(0, dtype=torch.long, device=device)

    def next(self, count: int) -> Tensor:
        while self.buffer.numel() < count:
            perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.buffer = torch.cat([self.buffer, perm])
        batch, self.buffer = self.buffer[:count], self.buffer[count:]
        return batch


@dataclass
class Session:
    """Everything a run trains with, built once by ``setup``."""

    cfg: TrainConfig
    run_dir: Path
    command: str
    device: torch.device
    rank: int
    world: int
    dataset: Dataset | StreamedDataset
    model: nn.Module  # DistributedDataParallel-wrapped under torchrun
    bare_model: nn.Module  # the model itself, for evaluation and checkpoints
    forward: Callable[[Tensor], Tensor]  # uint8 images -> fp32 logits, in the run's precision and layout
    precision: str  # fp32, bf16 or fp16 (--precision resolved on the device)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # fp16 loss scaling; a pass-through in other precisions
    class_index: ClassIndex
    generator: torch.Generator
    anchors: AnchorStream  # in-memory anchors (a streamed run draws none from it)
    patch_size: int
    shard: slice
    steps_per_epoch: int
    streams: DataStreams | None = None  # the batches of a streamed dataset; None: the dataset is in memory
    context: MethodContext = field(default_factory=MethodContext)  # the method's state, epoch, teacher
    step: int = 0  # optimiser steps done so far
    resumed: dict[str, Any] | None = None  # the training state's JSON part when resumed (epoch, elapsed, ...)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch
