"""The training methods, one record each: what the CLI, the loop, the study, the figures and the Train tab know.

Adding a method = one loss function (``explorer/ips.py`` for IPS and CS-KD, ``explorer.training.method_losses`` for
the field's other methods) + one ``Method`` record here; every other part of the tool reads this registry.

A method's ``step`` gets the step's batch as the loop prepared it: the augmented uint8 anchors of the *whole*
global batch, their same-class partners (for methods that use them), this process's ``shard`` of it and the
generator. Every random draw of a step is made for the whole global batch before the shard is taken, so a
DistributedDataParallel run sees exactly the batches of a single-process run. (Streamed data: each process gets
only its shard, and ``shard`` is everything.)

What a step costs is in the record: ``images_per_anchor`` images are forwarded per anchor, and a step has
``--batch-size`` anchors (``batch_counts_images``: ``--batch-size`` images, B / images_per_anchor anchors; the
two-view methods with ``--equal-compute``: B / 2 anchors), so ``config.step_images`` is the same number for
``--equal-compute``, the study's compute accounting and the benchmark's "x CE" column.

What a method keeps across steps lives in ``MethodContext.state`` (tensors by name), which the training state
saves and ``--resume`` restores, so a resumed run continues bit-identically on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.ips import cskd_loss, ips_loss, patch_swap
from explorer.training.method_losses import (
    LossParts,
    bake_loss,
    cutmix_batch,
    dlb_loss,
    label_smoothing_loss,
    mixed_ce,
    mixup_batch,
    pskd_loss,
    tfkd_reg_loss,
    zipf_loss,
)
from explorer.training.settings import TrainConfig

__all__ = ["BASELINE", "FEATURED", "METHODS", "Method", "MethodContext", "StepBatch", "StepOutput", "method_colour"]

# The official defaults of the methods whose hyper-parameters have no flag of their own (see each record's help)
LS_EPSILON = 0.1  # Self-KD-Lib and TF-KD
MIXUP_ALPHA, CUTMIX_ALPHA = 0.4, 1.0  # Self-KD-Lib's main.py
PSKD_ALPHA_T = 0.8  # PS-KD's --alpha_T
DLB_TEMPERATURE, DLB_WEIGHT = 3.0, 1.0  # DLB's code has no defaults (required flags): T = 3 from its "TP3" run name
ZIPF_WEIGHT = 0.1  # zipfls' CIFAR-100 command (--loss_lambda 0.1)
BAKE_IMAGES, BAKE_OMEGA = 3, 0.5  # BAKE's CIFAR-100 command: M = 3 same-class images per anchor, omega 0.5


@dataclass(frozen=True)
class StepOutput:
    """One optimiser step's loss and what the loop logs of it."""

    loss: Tensor  # scalar, back-propagated
    ce: Tensor  # scalar, detached
    kd: Tensor  # scalar, detached (0 for methods without a distillation term)
    correct: Tensor  # scalar, number of this shard's anchors predicted right
    teacher_confidence: Tensor | None = None  # IPS: scalar, summed true-class probability of the pairs' teachers
    teacher_correct: Tensor | None = None  # IPS: scalar, number of pairs whose teacher predicts the true class


@dataclass
class MethodContext:
    """What a method consults or keeps across steps; one per run, owned by the loop's session."""

    state: dict[str, Tensor] = field(default_factory=dict)  # saved in train_state.safetensors, restored by --resume
    epoch: int = 1  # the epoch being trained, from 1
    teacher: Callable[[Tensor], Tensor] | None = None  # kd: uint8 images -> the teacher's logits (no grad)
    model: nn.Module | None = None  # the bare model (BAKE reads its penultimate features)


@dataclass(frozen=True)
class StepBatch:
    """What a method's step works on (uint8 images, not yet normalised)."""

    anchors: Tensor  # [B, C, H, W], the global batch, augmented
    partners: Tensor | None  # [P * B, C, H, W]: P same-class partners per anchor (row j * B + i: anchor i's j-th)
    targets: Tensor  # [B / world] labels of this process's shard
    shard: slice  # this process's part of the global batch
    forward: Callable[[Tensor], Tensor]  # uint8 images -> logits (normalises, runs the model)
    cfg: TrainConfig
    patch_size: int
    generator: torch.Generator
    labels: Tensor | None = None  # [B] labels of every anchor row (default: targets)
    raw: Tensor | None = None  # [B, C, H, W] the anchors before augmentation (DLB stashes them)
    indices: Tensor | None = None  # [B] the anchors' indices in the training split (PS-KD's buffer rows)
    augment: Callable[[Tensor], Tensor] | None = None  # the run's augmentation on the generator (DLB's second view)
    context: MethodContext = field(default_factory=MethodContext)

    @property
    def all_labels(self) -> Tensor:
        return self.targets if self.labels is None else self.labels


@dataclass(frozen=True)
class Method:
    """A training method: its name on the command line and everything shown or computed about it."""

    name: str
    label: str  # how the app names it
    help: str  # one line for --help and the Train tab
    colour: str  # its colour in every figure
    images_per_anchor: int  # images forwarded per anchor: 1 the anchor alone; 2 two views (pairs, DLB); BAKE 4
    step: Callable[[StepBatch], StepOutput]
    compare_with: str  # the method "same settings, other method" launches next to it
    swaps_patches: bool = False  # uses --patch-size, --swap-ratio and --swap-prob
    partners: int = 0  # same-class partners the loop draws per anchor (cskd, ips: 1; bake: 3)
    batch_counts_images: bool = False  # --batch-size counts images, not anchors (BAKE's official batch of 128)
    initial_state: Callable[[Tensor, int], dict[str, Tensor]] | None = None  # (train labels, classes) -> state
    needs_teacher: bool = False  # kd: --teacher RUN_DIR
    uses_kd_flags: bool = False  # reads --temperature and --kd-weight

    @property
    def two_views(self) -> bool:
        """Forwards two images per anchor, so ``--equal-compute`` halves its anchors to match CE's images."""
        return self.images_per_anchor == 2 and not self.batch_counts_images


def _correct(logits: Tensor, targets: Tensor) -> Tensor:
    return (logits.argmax(1) == targets).sum()


def _output(parts: LossParts, logits: Tensor, targets: Tensor) -> StepOutput:
    return StepOutput(parts.total, parts.ce.detach(), parts.kd.detach(), _correct(logits, targets))


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


def _single_view_step(batch: StepBatch, loss: Callable[[Tensor, Tensor], LossParts]) -> StepOutput:
    """The methods that change only the loss of one view: label smoothing, Tf-KD_reg, Zipf's LS."""
    logits = batch.forward(batch.anchors[batch.shard])
    return _output(loss(logits, batch.targets), logits, batch.targets)


def _mixing_step(batch: StepBatch, mix: Callable[..., tuple[Tensor, Tensor, Tensor]], alpha: float) -> StepOutput:
    """Mixup and CutMix: mix the global batch (one lam per step, partners within the global batch), train on this
    process's shard of the mixed images with the mixed targets."""
    mixed, partner, lam = mix(batch.anchors, alpha, batch.generator)
    logits = batch.forward(mixed[batch.shard])
    partner_targets = batch.all_labels.index_select(0, partner)[batch.shard]
    return _output(mixed_ce(logits, batch.targets, partner_targets, lam), logits, batch.targets)


def _gathered_rows(rows: Tensor, *more: Tensor) -> tuple[Tensor, ...]:
    """Under torchrun: every process's ``rows`` (and ``more``, row-aligned) concatenated in rank order, shards of
    unequal length padded for the exchange and trimmed after; alone: unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return (rows, *more)
    world = dist.get_world_size()
    length = torch.tensor([len(rows)], device=rows.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    counts = [int(n) for n in lengths]  # a host sync, under torchrun only
    out = []
    for tensor in (rows, *more):
        padded = F.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, max(counts) - len(tensor)))
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]))
    return tuple(out)


def _pskd_state(labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """PS-KD's buffer: per training image its last prediction, one-hot labels before the first (the official
    code's epoch-0 targets)."""
    return {"pskd.predictions": F.one_hot(labels.long(), num_classes).float()}


def _pskd_step(batch: StepBatch) -> StepOutput:
    """PS-KD: targets mixed with each image's prediction of the last epoch (alpha_t = 0.8 x epoch / epochs), then
    this step's softmax stored in its row of the N x K buffer. Under torchrun every process keeps the whole buffer
    and writes every process's predictions into it (the official code's all_gather), so rank 0's saved state is
    complete; streamed data index it by the training-split index the loader gives."""
    ctx = batch.context
    buffer = ctx.state["pskd.predictions"]
    logits = batch.forward(batch.anchors[batch.shard])
    rows = batch.indices[batch.shard]
    alpha_t = PSKD_ALPHA_T * ctx.epoch / batch.cfg.epochs
    out = pskd_loss(logits, batch.targets, buffer.index_select(0, rows), alpha_t)
    all_rows, predictions = _gathered_rows(rows, F.softmax(logits.detach(), dim=1))
    buffer.index_copy_(0, all_rows, predictions)
    return _output(out, logits, batch.targets)


def _dlb_step(batch: StepBatch) -> StepOutput:
    """DLB: the last step's anchors come back as a second, freshly augmented view, forwarded in a pass of their own
    (as the official code), and the logits the last step gave them teach it. The first step of a run has no last
    batch and trains on CE alone. The stash (raw images, labels, logits) is the method state; under torchrun each
    process's logits are gathered, so every process (and the saved state) holds those of the whole global batch.
    Streamed under torchrun each process stashes its own shard and rank 0's stash is the one saved."""
    ctx, state = batch.context, batch.context.state
    logits = batch.forward(batch.anchors[batch.shard])
    if "dlb.images" in state:
        logits_last = batch.forward(batch.augment(state["dlb.images"])[batch.shard])
        parts = dlb_loss(logits, batch.targets, logits_last, state["dlb.labels"][batch.shard],
                         state["dlb.logits"][batch.shard], DLB_TEMPERATURE, DLB_WEIGHT)
    else:
        ce = F.cross_entropy(logits, batch.targets)
        parts = LossParts(ce, ce, torch.zeros((), device=ce.device))
    stashed = logits.detach()
    if len(stashed) != len(batch.raw):  # in memory under torchrun: the global batch's logits, in rank order
        (stashed,) = _gathered_rows(stashed)
    ctx.state.update({"dlb.images": batch.raw, "dlb.labels": batch.all_labels, "dlb.logits": stashed})
    return _output(parts, logits, batch.targets)


@contextlib.contextmanager
def _penultimate_features(model: nn.Module) -> Iterator[list[Tensor]]:
    """Within: the input of the model's last Linear layer (its penultimate features) is appended to the list."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].flatten(1)))
    try:
        yield captured
    finally:
        handle.remove()


def _bake_step(batch: StepBatch) -> StepOutput:
    """BAKE: each anchor with its 3 same-class images in one batch; every image's target is the affinity-propagated
    ensemble of the batch's predictions (penultimate-feature cosine affinities). Under torchrun each process
    ensembles its own shard (anchors with their partners), as the official small-scale code on one GPU."""
    cfg, n = batch.cfg, len(batch.anchors)
    groups = [batch.anchors[batch.shard]] + [batch.partners[j * n:(j + 1) * n][batch.shard] for j in range(BAKE_IMAGES)]
    targets = batch.targets.repeat(len(groups))
    with _penultimate_features(batch.context.model) as features:
        logits = batch.forward(torch.cat(groups))
    parts = bake_loss(logits, features[-1], targets, cfg.temperature, BAKE_OMEGA, cfg.kd_weight)
    return _output(parts, logits[:len(batch.targets)], batch.targets)


def _kd_step(batch: StepBatch) -> StepOutput:
    """Hinton KD from a trained teacher: CE + kd_weight x KL(teacher || student) x T^2 (the CS-KD loss, the
    teacher's logits on the same augmented anchors in place of a partner's)."""
    cfg = batch.cfg
    anchors = batch.anchors[batch.shard]
    logits = batch.forward(anchors)
    with torch.no_grad():
        teacher_logits = batch.context.teacher(anchors)
    out = cskd_loss(logits, teacher_logits, batch.targets, cfg.temperature, cfg.kd_weight)
    return StepOutput(out.total, out.ce.detach(), out.kd.detach(), _correct(logits, batch.targets))


_MODEL_A, _MODEL_B = "#2f6db5", "#e4632d"  # the app draws model A (a baseline) and model B (IPS) in these

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ce", "CE (baseline)", "plain cross-entropy on the anchors: the baseline", _MODEL_A, 1, _ce_step, "ips"),
    Method("cskd", "CS-KD", "class-wise self-distillation: CE on the anchor + KL from a same-class partner's "
           "prediction (no swap)", "#3a9a3a", 2, _cskd_step, "ce", partners=1, uses_kd_flags=True),
    Method("ips", "IPS", "intra-class patch swap: CE on both swapped views + KL from the more confident view to "
           "the other", _MODEL_B, 2, _ips_step, "ce", swaps_patches=True, partners=1, uses_kd_flags=True),
    # Variants of IPS's teacher rule (ours, not the paper's; see explorer/ips.py), for the over-confidence study
    Method("ips-margin", "IPS, margin teacher", "IPS with the teacher chosen by the true-class margin (logit minus "
           "the largest other logit) instead of the probability", "#b8860b", 2,
           partial(_ips_step, teacher_by="margin"), "ips", swaps_patches=True, partners=1, uses_kd_flags=True),
    Method("ips-correct", "IPS, correct teachers only", "IPS whose KD term counts only pairs whose teacher "
           "predicts the true class", "#8b3a62", 2, partial(_ips_step, correct_teacher_only=True), "ips",
           swaps_patches=True, partners=1, uses_kd_flags=True),
    # The field, each with its official defaults (explorer.training.method_losses cites the code followed)
    Method("ls", "Label smoothing", f"label smoothing: CE to 1 - eps on the true class, eps / (K - 1) on the others "
           f"(eps = {LS_EPSILON}, Self-KD-Lib)", "#17becf", 1,
           partial(_single_view_step, loss=partial(label_smoothing_loss, epsilon=LS_EPSILON)), "ips"),
    Method("mixup", "Mixup", f"Mixup: images and targets mixed with a permuted batch, lam ~ Beta({MIXUP_ALPHA}, "
           f"{MIXUP_ALPHA}) per step (Self-KD-Lib)", "#9467bd", 1,
           partial(_mixing_step, mix=mixup_batch, alpha=MIXUP_ALPHA), "ips"),
    Method("cutmix", "CutMix", f"CutMix: a box from the neighbouring image pasted in, targets mixed by area, "
           f"lam ~ Beta({CUTMIX_ALPHA}, {CUTMIX_ALPHA}) (as torchvision v2 CutMix)", "#8c564b", 1,
           partial(_mixing_step, mix=cutmix_batch, alpha=CUTMIX_ALPHA), "ips"),
    Method("tfkd", "Tf-KD (reg)", "teacher-free KD: 0.9 CE + 0.1 x 100 x KL to a hand-made teacher (0.99 on the true "
           "class, softened at T = 20; the official ResNet-18 CIFAR-100 setting)", "#bcbd22", 1,
           partial(_single_view_step, loss=tfkd_reg_loss), "ips"),
    Method("pskd", "PS-KD", f"progressive self-KD: CE to (1 - a_t) one-hot + a_t x the image's prediction of the last "
           f"epoch, a_t rising linearly to {PSKD_ALPHA_T}", "#e377c2", 1, _pskd_step, "ips",
           initial_state=_pskd_state),
    Method("dlb", "DLB", f"self-distillation from the last mini-batch: the last step's images again, re-augmented, "
           f"taught by the logits they had then (KL x T^2, T = {DLB_TEMPERATURE:g}, weight {DLB_WEIGHT:g}; our "
           f"choice, the code has no default)", "#5254a3", 2, _dlb_step, "ips"),
    Method("zipf", "Zipf's LS", f"Zipf's label smoothing: CE + {ZIPF_WEIGHT} x KL from a Zipf distribution over the "
           f"other classes ranked by the image's own logits (our choice; their CIFAR command ranks dense votes)",
           "#aec7e8", 1,
           partial(_single_view_step, loss=partial(zipf_loss, weight=ZIPF_WEIGHT)), "ips"),
    Method("bake", "BAKE", f"batch knowledge ensembling: each anchor with {BAKE_IMAGES} same-class images; KL to the "
           f"batch's feature-affinity ensemble (omega {BAKE_OMEGA}, --temperature, --kd-weight); --batch-size counts "
           f"images, so an epoch has N/4 anchors", "#ff9896", BAKE_IMAGES + 1, _bake_step, "ips", partners=BAKE_IMAGES,
           batch_counts_images=True,
           uses_kd_flags=True),
    Method("kd", "KD (teacher)", "knowledge distillation (Hinton) from the finished run --teacher RUN_DIR: CE + "
           "KL(teacher || student) x T^2 (--temperature, --kd-weight)", "#006d5b", 1, _kd_step, "ips",
           needs_teacher=True, uses_kd_flags=True),
)}
BASELINE, FEATURED = "ce", "ips"  # the app's default pair: model A and model B


def method_colour(name: str) -> str:
    """The colour of a method in every figure (grey for a name the registry does not know)."""
    method = METHODS.get(name)
    return method.colour if method else "#666666"
