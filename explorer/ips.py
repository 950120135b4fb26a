"""Intra-class patch swap self-distillation (IPS), the method in one module.

Choi, Jeon, Shukla, Turaga, "Intra-class Patch Swap for Self-Distillation", Neurocomputing 2025
(arXiv 2505.14124). Training, the web app and the tests import these functions, so what the app shows
is exactly what the optimiser saw. Pure PyTorch: nothing here imports Gradio.

The method in four steps:

1. ``same_class_partners`` gives every anchor of a mini-batch a random *other* training sample of the same
   class (the paper's two aligned batches B_a, B_b with y_a[i] == y_b[i], as in CS-KD's pair sampler).
2. ``patch_swap`` cuts both images into square patches and exchanges a random subset of patch positions
   between them (the same positions both ways), with probability ``p`` per pair.
3. The network predicts both swapped views. They hold different amounts of class evidence, so one is
   predicted more confidently: that view is the *teacher*, the other the *student*.
4. ``ips_loss`` = cross-entropy on both views + ``kd_weight`` x KL(teacher || student) at temperature T,
   scaled by T^2, the teacher detached. One network, no extra parameters.

Choices we made where the paper is not specific (all are arguments, these are the defaults):

- Confidence of a view is the softmax probability of the *true* class at T = 1 (not the max probability):
  the teacher should be the view that holds more evidence for the label both images share.
  A tie goes to view a.
- The swap is symmetric: the patch positions taken from b into a are exactly those given from a to b, so
  the pair together keeps every pixel of the original pair (``mask`` says where).
- Exactly ``round(ratio * number_of_patches)`` positions are swapped (Python's ``round``, half to even),
  default ratio 0.5; each pair is swapped with probability ``p``, otherwise left unchanged. The training default
  is p = 0.5 (``--swap-prob``), our choice, made on the holdout split of both offline datasets and confirmed once
  on the test split (docs/results.md). ``patch_swap`` itself defaults to p = 1, the plain operation.
- KD term: KL(softmax(teacher / T) || softmax(student / T)) x T^2, mean over pairs, teacher detached;
  T = 4, weight 1 (the CS-KD and RepDistiller conventions). Cross-entropy is the mean over both views.
- Partners are drawn uniformly from the whole training set, never the anchor itself unless its class
  has a single sample.

Two variants of the teacher rule, ours and not the paper's (it admits them without new parameters), for the
question why IPS's errors are confident (docs/results.md measures them):

- ``teacher_by="margin"``: the teacher is the view with the larger true-class *margin* (true-class logit minus
  the largest other logit), not the larger true-class probability. The two agree whenever one view is right and
  the other wrong; they differ in how they rank two views that are both right or both wrong.
- ``correct_teacher_only=True``: the KD term of a pair counts only when its teacher predicts the true class
  (argmax); a wrong teacher teaches nothing. ``kd`` stays the mean over *all* pairs (zeros included), so the
  term shrinks as teachers err instead of being re-weighted.

A third, KD at T = 1, needs no code: ``--temperature 1``.

The CS-KD peer (Yun et al., CVPR 2020) is ``cskd_loss``: the same pairs, no swap, cross-entropy on the
anchor and KL from the detached partner prediction to the anchor's. Where our CS-KD differs from the official
code (and Self-KD-Lib's copy of it): their ``PairBatchSampler`` draws the partner with
``random.choice(classwise_indices[y])``, uniform over the *whole* class, so with probability 1 / n (n = the
class size; 1 / 500 on CIFAR-100) an anchor is its own partner, while ``same_class_partners`` never draws the
anchor itself unless its class has one image. The training loop forwards the partners as they do, in a separate
``torch.no_grad()`` pass after the anchors (``--cskd-partner-pass joint``: one pass over both).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TEACHER_RULES",
    "ClassIndex",
    "DistillLoss",
    "IPSLoss",
    "build_class_index",
    "check_patch_size",
    "cskd_loss",
    "default_patch_size",
    "dividing_patch_sizes",
    "ips_loss",
    "patch_swap",
    "random_patch_mask",
    "same_class_partners",
    "swap_count",
    "swap_patches",
]


# --------------------------------------------------------------------------------------------------
# Same-class partners
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassIndex:
    """Dataset indices grouped by class, so partners are drawn with index arithmetic, not loops.

    The members of class ``c`` are ``sorted_indices[offsets[c] : offsets[c] + counts[c]]``. Per dataset index
    ``i``: ``rank[i]`` is its slot inside its class group, ``group_start[i]`` and ``group_size[i]`` where that
    group starts and how long it is (precomputed so a partner draw costs a handful of tensor ops).
    """

    labels: Tensor  # [N] long, the label of every dataset index
    sorted_indices: Tensor  # [N] long, dataset indices sorted by class (stable)
    offsets: Tensor  # [K] long, start of each class in sorted_indices
    counts: Tensor  # [K] long, samples per class
    rank: Tensor  # [N] long, slot of each dataset index within its class group
    group_start: Tensor  # [N] long, offsets[labels]
    group_size: Tensor  # [N] long, counts[labels]

    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())

    def to(self, device: torch.device | str) -> ClassIndex:
        return ClassIndex(*(getattr(self, f.name).to(device) for f in fields(self)))


def build_class_index(labels: Tensor, num_classes: int | None = None) -> ClassIndex:
    """Group a dataset's labels by class once, so that every later partner draw is O(batch)."""
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() == 0:
        raise ValueError("build_class_index needs at least one label")
    if int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(labels, minlength=k)
    offsets = torch.cumsum(counts, 0) - counts
    sorted_indices = torch.argsort(labels, stable=True)
    rank = torch.empty_like(labels)
    rank[sorted_indices] = torch.arange(labels.numel(), device=labels.device) - offsets[labels[sorted_indices]]
    return ClassIndex(labels, sorted_indices, offsets, counts, rank, offsets[labels], counts[labels])


def same_class_partners(anchors: Tensor, class_index: ClassIndex,
                        generator: torch.Generator | None = None) -> Tensor:
    """For each anchor (a dataset index), a random other dataset index of the same class.

    Inside the anchor's class group of size n, the partner sits ``1 + r`` slots after the anchor (cyclically)
    with ``r`` uniform in ``[0, n - 2]``: every other member is equally likely and the anchor itself never
    drawn. A class with one sample gives n = 1, r = 0 and the anchor partners itself.
    ``generator`` must live on the anchors' device.
    """
    anchors = anchors.long()
    size = class_index.group_size.index_select(0, anchors)  # index_select: a few times faster than x[i] on CPU
    # float64: rand() * (n - 1) stays below n - 1 for any realistic n, so no clamp is needed
    offset = (torch.rand(anchors.shape, generator=generator, device=anchors.device, dtype=torch.float64)
              * (size - 1)).long() + 1
    slot = (class_index.rank.index_select(0, anchors) + offset) % size
    return class_index.sorted_indices.index_select(0, class_index.group_start.index_select(0, anchors) + slot)


# --------------------------------------------------------------------------------------------------
# Patch swap
# --------------------------------------------------------------------------------------------------
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def swap_count(ratio: float, num_patches: int) -> int:
    """How many patch positions a swapped pair exchanges: ``round(ratio * num_patches)``."""
    return int(round(ratio * num_patches))


def dividing_patch_sizes(h: int, w: int) -> list[int]:
    """Every square patch size that tiles an H x W image: the common divisors of H and W, ascending.

    The one list of valid patch sizes: the CLI accepts these and the app offers these.
    """
    return [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]


def default_patch_size(image_size: tuple[int, int]) -> int:
    """The largest common divisor of H and W that is <= min(H, W) / 4: a grid of 4x4 patches or finer.

    7 px on 28x28 digits, 8 px on 32x32 CIFAR, 2 px on 8x8 digits, 16 px on 64x64 Tiny-ImageNet.
    """
    h, w = image_size
    return max(d for d in dividing_patch_sizes(h, w) if d <= max(1, min(h, w) // 4))


def check_patch_size(patch_size: object, image_size: tuple[int, int]) -> int:
    """``patch_size`` as an int when it tiles an H x W image, else a ValueError naming the allowed sizes."""
    h, w = image_size
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch size must be a positive integer; got {patch_size!r}")
    if h % patch_size or w % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide the {h}x{w} images; "
                         f"use one of {dividing_patch_sizes(h, w)}")
    return patch_size


def _check_pair_shapes(a: Tensor, b: Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"patch_swap needs two batches of the same shape [B, C, H, W]; "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_ratio_and_p(ratio: float, p: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"swap ratio must be in [0, 1] (the fraction of patches exchanged); got {ratio}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"swap probability p must be in [0, 1]; got {p}")


def _patch_bits(batch: int, grid: tuple[int, int], ratio: float, p: float, generator: torch.Generator | None,
                device: torch.device | str | None, bits: torch.dtype) -> Tensor:
    """[batch, gh, gw] integers of type ``bits``: all ones (-1) where a patch is exchanged, else 0.

    Built in the integer type the swap selects with, so the swap needs no conversion.
    """
    _check_ratio_and_p(ratio, p)
    gh, gw = grid
    k = swap_count(ratio, gh * gw)
    # Both draws always happen, so a generator's stream does not depend on ratio or p.
    scores = torch.rand(batch, gh * gw, generator=generator, device=device)
    pair_draw = torch.rand(batch, 1, generator=generator, device=device)
    patch_bits = torch.zeros(batch, gh * gw, dtype=bits, device=device)
    if k > 0:  # unsorted: the same k positions (one nth_element selects them either way), faster on the CPU
        patch_bits.scatter_(1, scores.topk(k, dim=1, sorted=False).indices, -1)
    if p < 1.0:
        patch_bits.masked_fill_(pair_draw >= p, 0)  # the pairs that are not swapped at all
    return patch_bits.view(batch, gh, gw)


@functools.lru_cache(maxsize=32)
def _pixel_to_patch(h: int, w: int, patch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """([H], [W]) long: the patch row of each pixel row and the patch column of each pixel column, made once."""
    return (torch.arange(h, device=device) // patch_size, torch.arange(w, device=device) // patch_size)


def _select_patches(a: Tensor, b: Tensor, patch_bits: Tensor) -> tuple[Tensor, Tensor]:
    """Exchange the patches where ``patch_bits`` (0 / all ones, [B, gh, gw]) is set; a and b [B, C, H, W].

    Branch-free exact select on the raw bits: with m all ones where swapped, a ^ ((a ^ b) & m) is b there and
    a elsewhere, for any dtype (floats, NaNs included). Four vectorised passes over the batch, two of them in
    place (half the cost of a pass that allocates); the pixel mask is two ``index_select`` of the patch bits
    (columns, then rows: faster on the CPU than one over the flattened grid, or than expanding the patches).
    torch.where is an order of magnitude slower on the CPU (it does not vectorise).
    """
    batch, _, h, w = a.shape
    rows, cols = _pixel_to_patch(h, w, h // patch_bits.shape[1], a.device)
    m = patch_bits.index_select(2, cols).index_select(1, rows)  # [B, H, W], the patch bits at pixel resolution
    a_bits, b_bits = a.view(patch_bits.dtype), b.view(patch_bits.dtype)
    diff = a_bits ^ b_bits
    diff &= m[:, None]
    swapped_a = a_bits ^ diff
    diff ^= b_bits  # b ^ (a ^ b) = a where swapped: the swapped b, in place
    return swapped_a.view(a.dtype), diff.view(b.dtype)


def random_patch_mask(batch: int, grid: tuple[int, int], ratio: float = 0.5, p: float = 1.0,
                      generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """The random half of ``patch_swap``: which patch positions each of ``batch`` pairs exchanges.

    bool [batch, gh, gw]; a row holds exactly ``round(ratio * gh * gw)`` True values with probability ``p``,
    else none. The same generator state gives the mask ``patch_swap`` would draw. ``generator`` must live on
    ``device``.
    """
    return _patch_bits(batch, grid, ratio, p, generator, device, torch.uint8) != 0


def swap_patches(a: Tensor, b: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The deterministic half of ``patch_swap``: exchange the patches that ``mask`` [B, gh, gw] marks.

    The patch size is H / gh (= W / gw). a and b are [B, C, H, W] of any dtype.
    """
    _check_pair_shapes(a, b)
    batch, _, h, w = a.shape
    if mask.dim() != 3 or mask.shape[0] != batch or h % mask.shape[1] or w % mask.shape[2] \
            or h // mask.shape[1] != w // mask.shape[2]:
        raise ValueError(f"a patch mask [B, gh, gw] must tile the {h}x{w} images of {batch} pairs into square "
                         f"patches; got {tuple(mask.shape)}")
    return _select_patches(a, b, mask.to(_SAME_SIZE_INT[a.element_size()]).neg_())


def patch_swap(a: Tensor, b: Tensor, patch_size: int, ratio: float = 0.5, p: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exchange a random subset of square patches between two batches of same-class images.

    Each image is cut into (H / patch_size) x (W / patch_size) patches. With probability ``p`` a pair
    exchanges exactly ``round(ratio * number_of_patches)`` randomly chosen patch positions (the same
    positions both ways); other pairs stay unchanged. Batched, on the inputs' device and dtype, no Python
    loop over samples; deterministic given ``generator`` (which must live on the inputs' device).
    ``random_patch_mask`` + ``swap_patches`` are its two halves, for callers that choose masks themselves.

    Returns ``(a_swapped, b_swapped, mask)`` with ``mask`` bool [B, H / patch_size, W / patch_size],
    True where a patch was exchanged.
    """
    _check_pair_shapes(a, b)
    h, w = a.shape[-2:]
    check_patch_size(patch_size, (h, w))
    patch_bits = _patch_bits(a.shape[0], (h // patch_size, w // patch_size), ratio, p, generator, a.device,
                             _SAME_SIZE_INT[a.element_size()])
    return (*_select_patches(a, b, patch_bits), patch_bits != 0)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistillLoss:
    """A self-distillation loss and its parts; ``total`` is what training back-propagates."""

    total: Tensor  # scalar
    ce: Tensor  # scalar
    kd: Tensor  # scalar, mean of kd_per_pair (before kd_weight)
    kd_per_pair: Tensor  # [B], KL x T^2 per pair


@dataclass(frozen=True)
class IPSLoss(DistillLoss):
    """The IPS loss, plus what decided it per pair (the app shows these)."""

    teacher_is_a: Tensor  # [B] bool
    confidence_a: Tensor  # [B], true-class probability of view a at T = 1
    confidence_b: Tensor  # [B]


def _kl_per_pair(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2 per row; the teacher is detached."""
    teacher_log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    student_log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(dim=1)
    return kl * temperature**2


def _check_loss_args(logits_a: Tensor, logits_b: Tensor, targets: Tensor, temperature: float) -> None:
    if logits_a.shape != logits_b.shape or logits_a.dim() != 2 or targets.shape != logits_a.shape[:1]:
        raise ValueError(f"expected logits [B, K], [B, K] and targets [B]; got {tuple(logits_a.shape)}, "
                         f"{tuple(logits_b.shape)} and {tuple(targets.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")


TEACHER_RULES = ("probability", "margin")


def _true_class_margin(logits: Tensor, targets: Tensor) -> Tensor:
    """True-class logit minus the largest other logit, per row (> 0 exactly when the prediction is right)."""
    true = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return true - others.max(dim=1).values


def ips_loss(logits_a: Tensor, logits_b: Tensor, targets: Tensor, temperature: float = 4.0,
             kd_weight: float = 1.0, teacher_by: str = "probability", correct_teacher_only: bool = False) -> IPSLoss:
    """Cross-entropy on both swapped views + KL from the more confident view to the other.

    The teacher of a pair is the view with the higher true-class probability at T = 1 (tie: view a), or with
    ``teacher_by="margin"`` the higher true-class margin. ``total = ce + kd_weight * kd`` with ``ce`` the mean of
    the two views' cross-entropies and ``kd`` the mean over pairs of KL(teacher || student) x T^2 (with
    ``correct_teacher_only``, 0 for pairs whose teacher's argmax is wrong); no KD gradient reaches the teacher.
    """
    _check_loss_args(logits_a, logits_b, targets, temperature)
    if teacher_by not in TEACHER_RULES:
        raise ValueError(f"teacher_by must be one of {TEACHER_RULES}; got {teacher_by!r}")
    with torch.no_grad():
        confidence_a = F.softmax(logits_a.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        confidence_b = F.softmax(logits_b.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        if teacher_by == "margin":
            margin_a = _true_class_margin(logits_a.float(), targets)
            teacher_is_a = margin_a >= _true_class_margin(logits_b.float(), targets)
        else:
            teacher_is_a = confidence_a >= confidence_b
    choose_a = teacher_is_a[:, None]
    teacher = torch.where(choose_a, logits_a, logits_b)
    student = torch.where(choose_a, logits_b, logits_a)
    kd_per_pair = _kl_per_pair(teacher, student, temperature)
    if correct_teacher_only:
        kd_per_pair = kd_per_pair * (teacher.detach().argmax(dim=1) == targets)
    ce = 0.5 * (F.cross_entropy(logits_a, targets) + F.cross_entropy(logits_b, targets))
    kd = kd_per_pair.mean()
    return IPSLoss(total=ce + kd_weight * kd, ce=ce, kd=kd, kd_per_pair=kd_per_pair,
                   teacher_is_a=teacher_is_a, confidence_a=confidence_a, confidence_b=confidence_b)


def cskd_loss(logits_anchor: Tensor, logits_partner: Tensor, targets: Tensor, temperature: float = 4.0,
              kd_weight: float = 1.0) -> DistillLoss:
    """CS-KD: cross-entropy on the anchor + KL(partner || anchor) x T^2, the partner detached."""
    _check_loss_args(logits_anchor, logits_partner, targets, temperature)
    kd_per_pair = _kl_per_pair(logits_partner, logits_anchor, temperature)
    ce = F.cross_entropy(logits_anchor, targets)
    kd = kd_per_pair.mean()
    return DistillLoss(total=ce + kd_weight * kd, ce=ce, kd=kd, kd_per_pair=kd_per_pair)
