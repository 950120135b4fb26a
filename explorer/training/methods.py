"""The training methods, one record each: what the CLI, the loop, the study, the figures and the Train tab know.

Adding a method = one loss function (in ``explorer/ips.py`` when it is a self-distillation loss) + one ``Method``
record here; every other part of the tool reads this registry.

A method's ``step`` gets the step's batch as the loop prepared it: the augmented uint8 anchors of the *whole*
global batch, their same-class partners (for methods that use pairs), this process's ``shard`` of it and the
generator. Every random draw of a step is made for the whole global batch before the shard is taken, so a
DistributedDataParallel run sees exactly the batches of a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from explorer.ips import cskd_loss, ips_loss, patch_swap

if TYPE_CHECKING:
    from explorer.training.config import TrainConfig

__all__ = ["BASELINE", "FEATURED", "METHODS", "Method", "StepBatch", "StepOutput", "method_colour"]


@dataclass(frozen=True)
class StepOutput:
    """One optimiser step's loss and what the loop logs of it."""

    loss: Tensor  # scalar, back-propagated
    ce: Tensor  # scalar, detached
    kd: Tensor  # scalar, detached (0 for methods without a distillation term)
    correct: Tensor  # scalar, number of this shard's anchors predicted right
    teacher_confidence: Tensor | None = None  # IPS: scalar, summed true-class probability of the pairs' teachers
    teacher_correct: Tensor | None = None  # IPS: scalar, number of pairs whose teacher predicts the true class


@dataclass(frozen=True)
class StepBatch:
    """What a method's step works on (uint8 images, not yet normalised)."""

    anchors: Tensor  # [B, C, H, W], the global batch, augmented
    partners: Tensor | None  # [B, C, H, W], a same-class partner per anchor, augmented; None for single images
    targets: Tensor  # [B / world] labels of this process's shard
    shard: slice  # this process's part of the global batch
    forward: Callable[[Tensor], Tensor]  # uint8 images -> logits (normalises, runs the model)
    cfg: TrainConfig
    patch_size: int
    generator: torch.Generator


@dataclass(frozen=True)
class Method:
    """A training method: its name on the command line and everything shown or computed about it."""

    name: str
    label: str  # how the app names it
    help: str  # one line for --help and the Train tab
    colour: str  # its colour in every figure
    images_per_anchor: int  # 1: the anchor alone; 2: anchor + same-class partner (the pair methods)
    step: Callable[[StepBatch], StepOutput]
    compare_with: str  # the method "same settings, other method" launches next to it
    swaps_patches: bool = False  # uses --patch-size, --swap-ratio and --swap-prob


def _correct(logits: Tensor, targets: Tensor) -> Tensor:
    return (logits.argmax(1) == targets).sum()


def _ce_step(batch: StepBatch) -> StepOutput:
    logits = batch.forward(batch.anchors[batch.shard])
    ce = F.cross_entropy(logits, batch.targets)
    return StepOutput(ce, ce.detach(), torch.zeros((), device=ce.device), _correct(logits, batch.targets))


def _cskd_step(batch: StepBatch) -> StepOutput:
    """CS-KD as published: the anchors forwarded with gradients, then the partners in a separate no-grad pass
    (BatchNorm in train mode normalises, and updates its running statistics with, each half on its own);
    ``--cskd-partner-pass joint`` forwards both in one pass instead."""
    cfg = batch.cfg
    anchors, partners = batch.anchors[batch.shard], batch.partners[batch.shard]
    if cfg.cskd_partner_pass == "joint":
        logits_a, logits_b = batch.forward(torch.cat([anchors, partners])).chunk(2)
    else:
        logits_a = batch.forward(anchors)
        with torch.no_grad():
            logits_b = batch.forward(partners)
    out = cskd_loss(logits_a, logits_b, batch.targets, cfg.temperature, cfg.kd_weight)
    return StepOutput(out.total, out.ce.detach(), out.kd.detach(), _correct(logits_a, batch.targets))


def _ips_step(batch: StepBatch, teacher_by: str = "probability", correct_teacher_only: bool = False) -> StepOutput:
    cfg = batch.cfg
    view_a, view_b, _ = patch_swap(batch.anchors, batch.partners, batch.patch_size, cfg.swap_ratio, cfg.swap_prob,
                                   batch.generator)
    logits_a, logits_b = batch.forward(torch.cat([view_a[batch.shard], view_b[batch.shard]])).chunk(2)
    out = ips_loss(logits_a, logits_b, batch.targets, cfg.temperature, cfg.kd_weight, teacher_by,
                   correct_teacher_only)
    teacher_logits = torch.where(out.teacher_is_a[:, None], logits_a, logits_b).detach()
    teacher_confidence = torch.where(out.teacher_is_a, out.confidence_a, out.confidence_b).sum()
    return StepOutput(out.total, out.ce.detach(), out.kd.detach(), _correct(logits_a, batch.targets),
                      teacher_confidence, _correct(teacher_logits, batch.targets))


_MODEL_A, _MODEL_B = "#2f6db5", "#e4632d"  # the app draws model A (a baseline) and model B (IPS) in these

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ce", "CE (baseline)", "plain cross-entropy on the anchors: the baseline", _MODEL_A, 1, _ce_step, "ips"),
    Method("cskd", "CS-KD", "class-wise self-distillation: CE on the anchor + KL from a same-class partner's "
           "prediction (no swap)", "#3a9a3a", 2, _cskd_step, "ce"),
    Method("ips", "IPS", "intra-class patch swap: CE on both swapped views + KL from the more confident view to "
           "the other", _MODEL_B, 2, _ips_step, "ce", swaps_patches=True),
    # Variants of IPS's teacher rule (ours, not the paper's; see explorer/ips.py), for the over-confidence study
    Method("ips-margin", "IPS, margin teacher", "IPS with the teacher chosen by the true-class margin (logit minus "
           "the largest other logit) instead of the probability", "#b8860b", 2,
           partial(_ips_step, teacher_by="margin"), "ips", swaps_patches=True),
    Method("ips-correct", "IPS, correct teachers only", "IPS whose KD term counts only pairs whose teacher "
           "predicts the true class", "#8b3a62", 2, partial(_ips_step, correct_teacher_only=True), "ips",
           swaps_patches=True),
)}
BASELINE, FEATURED = "ce", "ips"  # the app's default pair: model A and model B


def method_colour(name: str) -> str:
    """The colour of a method in every figure (grey for a name the registry does not know)."""
    method = METHODS.get(name)
    return method.colour if method else "#666666"
