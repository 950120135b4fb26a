"""The losses and batch draws of the self-distillation field's methods, as their authors' official code computes them.

Each loss takes logits (and what else its method needs) and returns ``LossParts``: ``total`` is back-propagated,
``ce`` and ``kd`` are what the loop logs. For every method ``total`` is a fixed combination of the two that its
docstring states (``ce + w * kd`` or ``(1 - w) * ce + w * kd``), so a log of ``ce`` and ``kd`` explains the loss.
Nothing here keeps state across steps: the records in ``explorer.training.methods`` own that.

Where the official code and the published paper differ, the code wins (the docstring says where). The random
draws (Mixup's and CutMix's lambda, CutMix's box, BAKE's partners) are made on the device with the run's
generator, so a run stays reproducible and resumable, and nothing is read back to the host inside a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explorer.ips import ClassIndex

__all__ = ["LossParts", "bake_loss", "cutmix_batch", "distinct_partners", "dlb_loss", "knowledge_ensemble",
           "label_smoothing_loss", "mixed_ce", "mixup_batch", "pskd_loss", "sample_beta", "tfkd_reg_loss",
           "zipf_distribution", "zipf_loss"]


@dataclass(frozen=True)
class LossParts:
    """One step's loss and its two logged parts."""

    total: Tensor  # scalar, back-propagated
    ce: Tensor  # scalar: cross-entropy to the hard labels
    kd: Tensor  # scalar: the method's soft-target term (before its weight)


def _soft_ce(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """Mean over the batch of -sum_k q_k log p_k."""
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def label_smoothing_loss(logits: Tensor, targets: Tensor, epsilon: float = 0.1) -> LossParts:
    """Label smoothing as Self-KD-Lib's ``LabelSmooth`` (and TF-KD's ``loss_label_smoothing``): CE to 1 - eps on the
    true class and eps / (K - 1) on each other class (not eps / K). ``total = (1 - eps) * ce + eps * kd``, ``kd`` the
    CE to the uniform distribution over the other classes."""
    k = logits.shape[1]
    others = torch.full_like(logits, 1.0 / (k - 1)).scatter_(1, targets[:, None], 0.0)
    ce, kd = F.cross_entropy(logits, targets), _soft_ce(logits, others)
    return LossParts((1 - epsilon) * ce + epsilon * kd, ce, kd)


def tfkd_reg_loss(logits: Tensor, targets: Tensor, alpha: float = 0.1, temperature: float = 20.0,
                  multiplier: float = 100.0, correct_prob: float = 0.99) -> LossParts:
    """Tf-KD_reg as ``loss_kd_regularization`` of yuanli2333/Teacher-free-Knowledge-Distillation: a hand-made teacher
    with ``correct_prob`` on the true class and the rest uniform, softened as softmax(teacher / T), and
    ``nn.KLDivLoss()`` (the mean over all N x K entries, not per sample) from it to the student at T = 1.
    ``total = (1 - alpha) * ce + alpha * kd`` with ``kd = multiplier * KL``; defaults: their ResNet-18 CIFAR-100
    params.json (T = 20, alpha = 0.1, multiplier = 100)."""
    k = logits.shape[1]
    teacher = torch.full_like(logits, (1 - correct_prob) / (k - 1)).scatter_(1, targets[:, None], correct_prob)
    teacher = F.softmax(teacher / temperature, dim=1)
    kl = F.kl_div(F.log_softmax(logits, dim=1), teacher, reduction="sum") / logits.numel()  # KLDivLoss()'s mean
    ce = F.cross_entropy(logits, targets)
    kd = multiplier * kl
    return LossParts((1 - alpha) * ce + alpha * kd, ce, kd)


def pskd_loss(logits: Tensor, targets: Tensor, previous: Tensor, alpha_t: float) -> LossParts:
    """PS-KD (lgcnsai/PS-KD-Pytorch): CE to ``(1 - alpha_t) * one-hot + alpha_t * previous``, ``previous`` the model's
    softmax for these samples in the last epoch (a detached buffer). ``total = (1 - alpha_t) * ce + alpha_t * kd``,
    ``kd`` the CE to ``previous``."""
    ce, kd = F.cross_entropy(logits, targets), _soft_ce(logits, previous.detach())
    return LossParts((1 - alpha_t) * ce + alpha_t * kd, ce, kd)


def _kl_t2(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, batchmean, the teacher detached."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits.detach() / temperature, dim=1), reduction="batchmean") * temperature**2


def dlb_loss(logits: Tensor, targets: Tensor, logits_last: Tensor, targets_last: Tensor, stashed_last: Tensor,
             temperature: float = 3.0, weight: float = 1.0) -> LossParts:
    """DLB (Meta-knowledge-Lab/DLB ``train_one_epoch``): CE over the current batch and the last batch's second view
    together, + ``weight`` x KL(last step's logits on the last batch || this step's logits on its second view) x T^2,
    batchmean, the stashed logits detached. ``total = ce + weight * kd``."""
    ce = F.cross_entropy(torch.cat([logits_last, logits]), torch.cat([targets_last, targets]))
    kd = _kl_t2(stashed_last, logits_last, temperature)
    return LossParts(ce + weight * kd, ce, kd)


def zipf_distribution(logits: Tensor, targets: Tensor, power: float = 1.0) -> Tensor:
    """Zipf's LS soft target over the classes (0 on the true class): each other class gets (1 / rank) ** power,
    its rank among all K logits (1 = largest; ties share the smallest rank, as scipy's ``rankdata(method="min")``),
    normalised over the other classes."""
    logits = logits.detach()
    ascending = logits.sort(dim=1).values
    rank = logits.shape[1] - torch.searchsorted(ascending, logits, right=True) + 1  # 1 + number of larger logits
    weights = rank.to(logits.dtype).reciprocal().pow(power).scatter(1, targets[:, None], 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def zipf_loss(logits: Tensor, targets: Tensor, weight: float = 0.1, power: float = 1.0) -> LossParts:
    """Zipf's label smoothing (megvii-research/zipfls ``zipf_loss`` + ``kl_loss``): CE + ``weight`` x KL(zipf ||
    softmax over the non-target logits), per sample summed, batch mean. The ranking uses the sample's own logits
    (the repository's ``rank="hard"`` without ``--dense``: our choice, it needs no feature map, so it works with
    any model; their CIFAR command ranks dense per-pixel votes). ``total = ce + weight * kd``; weight 0.1 as their
    CIFAR-100 command (``--loss_lambda 0.1``)."""
    k = logits.shape[1]
    target = zipf_distribution(logits, targets, power)
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, targets[:, None], False)
    log_q = F.log_softmax(logits[keep].view(-1, k - 1), dim=1)
    p = target[keep].view(-1, k - 1)
    kd = F.kl_div(log_q, p, reduction="none").sum(dim=1).mean()
    ce = F.cross_entropy(logits, targets)
    return LossParts(ce + weight * kd, ce, kd)


def knowledge_ensemble(features: Tensor, logits: Tensor, temperature: float = 4.0, omega: float = 0.5) -> Tensor:
    """BAKE's soft targets (yxgeee/BAKE ``knowledge_ensemble``): affinities softmax(cos(f_i, f_j)) over the other
    samples of the batch, propagated as (1 - omega) (I - omega W)^-1 softmax(logits / T)."""
    n = logits.shape[0]
    eye = torch.eye(n, device=logits.device, dtype=torch.float32)
    features = F.normalize(features.detach().float(), p=2, dim=1)
    affinity = F.softmax(features @ features.T - eye * 1e9, dim=1)
    propagate = (1 - omega) * torch.linalg.inv(eye - omega * affinity)
    return propagate @ F.softmax(logits.detach().float() / temperature, dim=1)


def bake_loss(logits: Tensor, features: Tensor, targets: Tensor, temperature: float = 4.0, omega: float = 0.5,
              weight: float = 1.0) -> LossParts:
    """BAKE (yxgeee/BAKE small_scale ``train``): CE + ``weight`` x KL(ensemble || softmax(logits / T)) x T^2 summed
    and divided by the batch size, the ensemble detached. ``total = ce + weight * kd``."""
    soft = knowledge_ensemble(features, logits, temperature, omega)
    kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="sum") * temperature**2 / len(logits)
    ce = F.cross_entropy(logits, targets)
    return LossParts(ce + weight * kd, ce, kd)


def mixed_ce(logits: Tensor, targets: Tensor, partner_targets: Tensor, lam: Tensor) -> LossParts:
    """Mixup's and CutMix's loss: ``lam * CE(y) + (1 - lam) * CE(y_partner)``; logged as ``ce`` (the first term's CE)
    and ``kd`` (the partner's CE), ``total = lam * ce + (1 - lam) * kd``."""
    ce, kd = F.cross_entropy(logits, targets), F.cross_entropy(logits, partner_targets)
    return LossParts(lam * ce + (1 - lam) * kd, ce, kd)


_GAMMA_CANDIDATES = 16  # Marsaglia-Tsang accepts >= 95 % of candidates: all 16 rejected has probability < 1e-20


def _sample_gamma(shape: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """One Gamma(shape, 1) draw on the device from ``generator`` (Marsaglia & Tsang 2000; shape < 1 by
    Gamma(shape + 1) * U^(1 / shape)), without a host round trip: the first accepted of a fixed set of candidates."""
    boost = shape < 1
    a = shape + 1 if boost else shape
    d = a - 1 / 3
    c = 1 / (9 * d) ** 0.5
    x = torch.randn(_GAMMA_CANDIDATES, generator=generator, device=device, dtype=torch.float64)
    u = torch.rand(_GAMMA_CANDIDATES, generator=generator, device=device, dtype=torch.float64)
    v = (1 + c * x) ** 3
    accept = (v > 0) & (u.log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-300).log())
    draw = d * v[accept.to(torch.uint8).argmax()]
    if boost:
        draw = draw * torch.rand((), generator=generator, device=device, dtype=torch.float64) ** (1 / shape)
    return draw


def sample_beta(alpha: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """One Beta(alpha, alpha) draw (a float32 scalar on the device); alpha = 1 is a plain uniform draw."""
    if alpha == 1.0:
        return torch.rand((), generator=generator, device=device)
    x, y = _sample_gamma(alpha, generator, device), _sample_gamma(alpha, generator, device)
    return (x / (x + y)).float()


def mixup_batch(images: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Mixup as Self-KD-Lib's ``mixup_data``: one lam ~ Beta(alpha, alpha) per batch and a random permutation as
    partners; returns (float images lam x + (1 - lam) x[perm] in the uint8 value range, perm, lam)."""
    lam = sample_beta(alpha, generator, images.device)
    perm = torch.randperm(len(images), generator=generator, device=images.device)
    mixed = lam * images.float() + (1 - lam) * images.index_select(0, perm).float()
    return mixed, perm, lam


def cutmix_batch(images: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix as torchvision.transforms.v2.CutMix: lam ~ Beta(alpha, alpha); a box of half-sides
    int(0.5 sqrt(1 - lam) W) x int(0.5 sqrt(1 - lam) H) around a uniform centre, clipped to the image, pasted from
    the batch rolled by one; lam then set to the share of the image left uncovered. Returns (images, the partner of
    each image (i - 1), lam)."""
    n, _, h, w = images.shape
    device = images.device
    lam = sample_beta(alpha, generator, device)
    centre = torch.rand(2, generator=generator, device=device)
    cy, cx = (centre[0] * h).long(), (centre[1] * w).long()  # torch.randint(H) and randint(W), on the device
    half = 0.5 * torch.sqrt(1.0 - lam)
    half_h, half_w = (half * h).long(), (half * w).long()
    y1, y2 = (cy - half_h).clamp(min=0), (cy + half_h).clamp(max=h)
    x1, x2 = (cx - half_w).clamp(min=0), (cx + half_w).clamp(max=w)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    box = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    partner = torch.arange(n, device=device).roll(1)
    mixed = torch.where(box, images.index_select(0, partner), images)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return mixed, partner, lam.float()


def distinct_partners(anchors: Tensor, class_index: ClassIndex, count: int, generator: torch.Generator) -> Tensor:
    """[count, B] dataset indices: for each anchor ``count`` other members of its class, distinct when the class has
    more than ``count`` members (BAKE's ``IdentityBatchSampler``: ``np.random.choice(..., replace=False)``), drawn
    with replacement otherwise. Row j's draw is uniform over the slots not taken by rows < j."""
    anchors = anchors.long()
    size = class_index.group_size.index_select(0, anchors)
    others = size - 1
    distinct = others >= count
    taken: list[Tensor] = []
    rows = []
    for j in range(count):
        free = torch.where(distinct, others - j, others).clamp(min=1)
        pick = (torch.rand(anchors.shape, generator=generator, device=anchors.device, dtype=torch.float64)
                * free).long()
        for earlier in _sorted_columns(taken):  # step over the offsets already taken, smallest first
            pick = pick + (distinct & (pick >= earlier)).long()
        taken.append(pick)
        slot = (class_index.rank.index_select(0, anchors) + 1 + pick) % size.clamp(min=1)
        rows.append(class_index.sorted_indices.index_select(0, class_index.group_start.index_select(0, anchors) + slot))
    return torch.stack(rows)


def _sorted_columns(columns: list[Tensor]) -> list[Tensor]:
    """The per-anchor values of ``columns`` sorted ascending, as a list of columns (smallest first)."""
    if not columns:
        return []
    return list(torch.stack(columns).sort(dim=0).values)
