"""Swapped same-class pairs as the app shows them: one pair in detail, or many pairs' confidence gaps.

Both use the core's ``random_patch_mask``, ``swap_patches`` and ``ips_loss``, so a pair's teacher and KL term
are exactly what training would compute for it. The exchanged positions belong to the *anchor* (view a): a seed
draws one mask per test image at once (``anchor_masks``), and the pair anchored at test image i uses row i,
whatever its partner, the number of pairs or the class filter. So a pair opened from the gap table in the Patch
swap tab (same seed, same anchor) shows the same patches, confidences and KL as in the table, every pair is
swapped in one batched call, and a class sees the same pairs every time for the same seed. An uploaded view a
has no test index and uses row 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explorer.data import Dataset
from explorer.evaluate import predict_logits
from explorer.ips import (
    build_class_index,
    check_patch_size,
    ips_loss,
    random_patch_mask,
    same_class_partners,
    swap_patches,
)

__all__ = ["GapStatistics", "PairGaps", "PairScores", "SwappedPair", "SwappedTestPairs", "anchor_masks",
           "class_test_index", "confidence_gaps", "gap_statistics", "swap_pair", "swapped_test_pairs"]


def anchor_masks(dataset: Dataset, patch_size: int, ratio: float, seed: int) -> Tensor:
    """bool [N_test, gh, gw]: the patch positions a pair anchored at each test image exchanges under ``seed``."""
    h, w = dataset.image_size
    check_patch_size(patch_size, dataset.image_size)
    return random_patch_mask(len(dataset.test_labels), (h // patch_size, w // patch_size), ratio,
                             generator=torch.Generator().manual_seed(seed))


def class_test_index(dataset: Dataset, label: int, rank: int) -> int:
    """The test-split index of the ``rank``-th test image of class ``label``."""
    index = build_class_index(dataset.test_labels, dataset.num_classes)
    count = int(index.counts[label])
    if not 0 <= rank < count:
        raise ValueError(f"class {dataset.class_names[label]} has {count} test images; index {rank} is out of range")
    return int(index.sorted_indices[index.offsets[label] + rank])


# --------------------------------------------------------------------------------------------------
# One pair in detail
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairScores:
    """What one model says about a pair: true-class confidences, the teacher, the KL term."""

    original_a: float
    original_b: float
    swapped_a: float
    swapped_b: float
    teacher: str  # "a" or "b": the swapped view with the higher true-class confidence (a on a tie, as ips_loss)
    kd: float  # KL(teacher || student) x T^2 of the swapped pair, as ips_loss computes it
    tie: bool  # both swapped views have exactly the same confidence: a teaches by the rule, not by the model


@dataclass(frozen=True)
class SwappedPair:
    originals: Tensor  # uint8 [2, C, H, W]: a, b
    swapped: Tensor  # uint8 [2, C, H, W]: a with b's patches, b with a's
    mask: Tensor  # bool [H / patch_size, W / patch_size], True where patches were exchanged
    label: int
    patch_size: int
    scores: dict[str, PairScores]  # by model name


def swap_pair(dataset: Dataset, image_a: Tensor, image_b: Tensor, label: int, patch_size: int, ratio: float,
              seed: int, models: dict[str, nn.Module], anchor: int | None = None) -> SwappedPair:
    """Swap two uint8 images [C, H, W] of class ``label`` and score both views of both pairs with each model.

    ``anchor``: the test index of image a, whose row of ``anchor_masks`` gives the exchanged positions
    (None for an upload: row 0).
    """
    originals = torch.stack([image_a, image_b])
    mask = anchor_masks(dataset, patch_size, ratio, seed)[[anchor or 0]]
    swapped_a, swapped_b = swap_patches(originals[:1], originals[1:], mask)
    views = torch.cat([originals, swapped_a, swapped_b])  # a, b, a', b'
    targets = torch.tensor([label, label])
    scores = {}
    for name, model in models.items():
        logits = predict_logits(model, dataset, views)
        # Pair 0 = the originals, pair 1 = the swapped views: one ips_loss call gives all four confidences.
        out = ips_loss(logits[[0, 2]], logits[[1, 3]], targets.to(logits.device))
        conf_a, conf_b = out.confidence_a.tolist(), out.confidence_b.tolist()
        scores[name] = PairScores(conf_a[0], conf_b[0], conf_a[1], conf_b[1],
                                  "a" if bool(out.teacher_is_a[1]) else "b", float(out.kd_per_pair[1]),
                                  conf_a[1] == conf_b[1])
    return SwappedPair(originals, torch.cat([swapped_a, swapped_b]), mask[0], label, patch_size, scores)


# --------------------------------------------------------------------------------------------------
# Many pairs: confidence gaps
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairGaps:
    """N swapped test pairs and, per model, each view's true-class confidence, the teacher and the KL."""

    anchors: Tensor  # [N] test indices of view a's source
    partners: Tensor  # [N] test indices of view b's source
    labels: Tensor  # [N]
    confidence_a: dict[str, Tensor]  # model name -> [N]
    confidence_b: dict[str, Tensor]
    teacher_is_a: dict[str, Tensor]
    kd: dict[str, Tensor]

    def gap(self, name: str) -> Tensor:
        """|conf_a - conf_b| of each pair under model ``name``."""
        return (self.confidence_a[name] - self.confidence_b[name]).abs()


@dataclass(frozen=True)
class SwappedTestPairs:
    """Same-class test pairs and their swapped views: what ``confidence_gaps``, the evidence and CAM analyses score."""

    anchors: Tensor  # [N] test indices of view a's source
    partners: Tensor  # [N] test indices of view b's source
    labels: Tensor  # [N]
    masks: Tensor  # bool [N, gh, gw]: the exchanged positions (the anchors' rows of anchor_masks)
    view_a: Tensor  # uint8 [N, C, H, W]: the anchor with the partner's patches at the mask
    view_b: Tensor  # uint8 [N, C, H, W]: the partner with the anchor's patches at the mask


def swapped_test_pairs(dataset: Dataset, n_pairs: int, patch_size: int, ratio: float, seed: int,
                       label: int | None = None) -> SwappedTestPairs:
    """``n_pairs`` random same-class test pairs (of class ``label``, or all classes), swapped in one batched call.

    With a fixed ``seed`` every test image is the anchor of the same pair every time (its partner and its
    swap are fixed), so a larger N or a class filter only adds or selects pairs, never reshuffles them.
    """
    images, labels = dataset.split("test")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    partners_of = same_class_partners(torch.arange(len(labels)), build_class_index(labels, dataset.num_classes),
                                      generator)
    if label is not None:
        order = order[labels[order] == label]
    if n_pairs < 1:
        raise ValueError(f"the number of pairs must be at least 1; got {n_pairs}")
    anchors = order[:n_pairs]
    partners = partners_of[anchors]
    masks = anchor_masks(dataset, patch_size, ratio, seed)[anchors]
    view_a, view_b = swap_patches(images[anchors], images[partners], masks)
    return SwappedTestPairs(anchors, partners, labels[anchors], masks, view_a, view_b)


def confidence_gaps(dataset: Dataset, models: dict[str, nn.Module], n_pairs: int, patch_size: int, ratio: float,
                    seed: int, label: int | None = None) -> PairGaps:
    """Swap ``n_pairs`` random same-class test pairs (``swapped_test_pairs``) and score them with each model."""
    pairs = swapped_test_pairs(dataset, n_pairs, patch_size, ratio, seed, label)
    conf_a, conf_b, teacher, kd = {}, {}, {}, {}
    for name, model in models.items():
        logits_a, logits_b = predict_logits(model, dataset, torch.cat([pairs.view_a, pairs.view_b])).cpu().chunk(2)
        out = ips_loss(logits_a, logits_b, pairs.labels)
        conf_a[name], conf_b[name], teacher[name], kd[name] = (out.confidence_a, out.confidence_b,
                                                               out.teacher_is_a, out.kd_per_pair)
    return PairGaps(pairs.anchors, pairs.partners, pairs.labels, conf_a, conf_b, teacher, kd)


@dataclass(frozen=True)
class GapStatistics:
    """How far apart the swapped views' confidences are, and who teaches: a′, b′, or neither (a tie).

    A tie (both confidences exactly equal, typically both 1.0 in float32) makes a′ the teacher by ips_loss's
    rule, not because the model prefers it, so it is counted apart: ``a_teaches + b_teaches + ties == 1``.
    """

    mean: float
    median: float
    a_teaches: float  # fraction of pairs in which view a′ is strictly more confident than b′
    b_teaches: float  # fraction of pairs in which view b′ is strictly more confident than a′
    ties: float  # fraction of pairs with exactly equal confidences (a′ teaches by the rule)
    class_mean: list[float | None]  # mean gap per class; None where the class has no pair
    class_count: list[int]


def gap_statistics(gaps: Tensor, labels: Tensor, teacher_is_a: Tensor, num_classes: int) -> GapStatistics:
    """Summaries of per-pair gaps: overall mean and median, shares of a′ / b′ teachers and ties, mean per class."""
    gaps, labels = gaps.double().cpu(), labels.long().cpu()
    tie, teacher_is_a = gaps == 0, teacher_is_a.cpu()
    count = torch.bincount(labels, minlength=num_classes)
    total = torch.bincount(labels, weights=gaps, minlength=num_classes)
    class_mean = [float(t / c) if c else None for t, c in zip(total.tolist(), count.tolist(), strict=True)]
    return GapStatistics(mean=float(gaps.mean()), median=float(gaps.quantile(0.5)),
                         a_teaches=float((teacher_is_a & ~tie).double().mean()),
                         b_teaches=float((~teacher_is_a & ~tie).double().mean()), ties=float(tie.double().mean()),
                         class_mean=class_mean, class_count=count.tolist())
