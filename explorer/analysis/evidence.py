"""Patch evidence: which patch positions decide the teacher of a swapped pair (occlusion at patch granularity).

Why: IPS makes the swapped view with the higher true-class confidence the teacher. To see which patches tip
that choice, exchange ONE grid position p at a time between the same-class images a and b and measure how each
image's true-class confidence moves:

    delta_a[p] = conf(a with b's patch at p) - conf(a)
    delta_b[p] = conf(b with a's patch at p) - conf(b)
    evidence_for_a[p] = delta_a[p] - delta_b[p]

Exchanging p alone moves the gap conf(a') - conf(b') by evidence_for_a[p]: positive evidence pushes the
teacher towards a' (a gains or b loses more by the exchange), negative towards b'. For a mask M (the positions
a real swap exchanges) the first-order, additive prediction is

    predicted conf(a') = conf(a) + sum over p in M of delta_a[p]   (the summed evidence a' receives)
    predicted conf(b') = conf(b) + sum over p in M of delta_b[p]

and the predicted teacher is the view with the higher predicted confidence. It ignores how patches interact,
so it can disagree with the teacher the model actually chooses, which comes from ``ips_loss`` on the real
swapped views, exactly as in training (a tie goes to a). ``evidence_agreement`` measures how often the two
agree over many pairs. Exchanging the k positions of highest evidence (``evident_mask(most=True)``) pushes
the prediction towards a', the k lowest towards b'; with k = half the grid and additive evidence the two
predicted gaps sum to 0, so one predicts a' and the other b'.

Confidences here are softmax probabilities computed in float64: a confident model reaches exactly 1.0 in
float32 (most mnist5k test images, for a well-trained model) and every delta would be 0. Every
variant of every pair goes through one batched forward; no Python loop over samples or positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.analysis.pairs import anchor_masks, confidence_gaps
from explorer.data import Dataset
from explorer.evaluate import predict_logits
from explorer.ips import check_patch_size, ips_loss, swap_patches

__all__ = ["EVIDENCE_FORWARD_LIMIT", "EvidenceAgreement", "PatchEvidence", "TeacherCheck", "check_teacher",
           "evidence_agreement", "evidence_forwards", "evident_mask", "patch_evidence"]

_IMAGES_PER_FORWARD_CHUNK = 16384  # bounds memory when many pairs x many positions are scored
# The images one ``evidence_agreement`` may forward: a request of the app's shared heavy lane must end in about a
# minute of one CPU core for the small models, not hold it for ten (1 000 pairs of 1-pixel patches are 1.6 million).
EVIDENCE_FORWARD_LIMIT = 100_000


def _true_class_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    return F.softmax(logits.double(), dim=1).gather(1, labels[:, None]).squeeze(1)


def _single_patch_deltas(model: nn.Module, dataset: Dataset, a: Tensor, b: Tensor, labels: Tensor,
                         patch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """conf(a), conf(b) [N] and delta_a, delta_b [N, gh, gw] of N pairs a, b [N, C, H, W], in one forward."""
    n, (h, w) = len(a), a.shape[-2:]
    gh, gw = h // patch_size, w // patch_size
    cells = gh * gw
    one_position = torch.eye(cells, dtype=torch.bool, device=a.device).view(cells, gh, gw).repeat(n, 1, 1)
    a_with_b_patch, b_with_a_patch = swap_patches(a.repeat_interleave(cells, 0), b.repeat_interleave(cells, 0),
                                                  one_position)
    logits = predict_logits(model, dataset, torch.cat([a, b, a_with_b_patch, b_with_a_patch])).cpu()
    per_variant = labels.repeat_interleave(cells)
    confidence = _true_class_confidence(logits, torch.cat([labels, labels, per_variant, per_variant]))
    conf_a, conf_b, varied_a, varied_b = confidence.split([n, n, n * cells, n * cells])
    return (conf_a, conf_b, varied_a.view(n, gh, gw) - conf_a[:, None, None],
            varied_b.view(n, gh, gw) - conf_b[:, None, None])


def _predicted_changes(delta_a: Tensor, delta_b: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """The summed deltas over each pair's exchanged positions: first-order changes of conf(a'), conf(b') [N]."""
    return (delta_a * masks).sum((1, 2)), (delta_b * masks).sum((1, 2))


def _predicted_gap(conf_a: Tensor, conf_b: Tensor, change_a: Tensor, change_b: Tensor) -> Tensor:
    """Predicted conf(a') - conf(b'): > 0 predicts teacher a', < 0 teacher b'."""
    return (conf_a + change_a) - (conf_b + change_b)


def _agreement(predicted_gap: Tensor, teacher_is_a: Tensor, actual_tie: Tensor) -> tuple[Tensor, Tensor]:
    """(agrees, tie) per pair; a tie (either gap exactly 0) tests no prediction and is never an agreement."""
    tie = (predicted_gap == 0) | actual_tie
    return ~tie & ((predicted_gap > 0) == teacher_is_a), tie


# --------------------------------------------------------------------------------------------------
# One pair
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchEvidence:
    """One model's single-patch exchange deltas for one pair (float64, CPU); the module docstring defines them."""

    image_a: Tensor  # uint8 [C, H, W]
    image_b: Tensor
    label: int
    patch_size: int
    confidence_a: float  # true-class confidence of the original a
    confidence_b: float
    delta_a: Tensor  # [gh, gw]: conf(a with b's patch at p) - conf(a)
    delta_b: Tensor  # [gh, gw]: conf(b with a's patch at p) - conf(b)

    @property
    def evidence_for_a(self) -> Tensor:
        """[gh, gw]: how much exchanging p alone moves conf(a') - conf(b'); > 0 favours a' as the teacher."""
        return self.delta_a - self.delta_b

    def to_json(self) -> dict:
        return {"label": self.label, "patch_size": self.patch_size, "grid": list(self.delta_a.shape),
                "confidence_a": self.confidence_a, "confidence_b": self.confidence_b,
                "delta_a": self.delta_a.tolist(), "delta_b": self.delta_b.tolist(),
                "evidence_for_a": self.evidence_for_a.tolist()}


def patch_evidence(model: nn.Module, dataset: Dataset, image_a: Tensor, image_b: Tensor, label: int,
                   patch_size: int) -> PatchEvidence:
    """Exchange each patch position alone between uint8 images a and b [C, H, W] of class ``label``; score all."""
    if image_a.dim() != 3 or image_a.shape != image_b.shape:
        raise ValueError(f"need two images of the same shape [C, H, W]; got {tuple(image_a.shape)} and "
                         f"{tuple(image_b.shape)}")
    check_patch_size(patch_size, tuple(image_a.shape[-2:]))
    conf_a, conf_b, delta_a, delta_b = _single_patch_deltas(model, dataset, image_a[None], image_b[None],
                                                            torch.tensor([label]), patch_size)
    return PatchEvidence(image_a, image_b, label, patch_size, float(conf_a), float(conf_b), delta_a[0], delta_b[0])


def evident_mask(evidence: PatchEvidence, k: int, *, most: bool = True) -> Tensor:
    """bool [gh, gw]: the k positions of highest (``most``) or lowest evidence_for_a; ties by grid position.

    Exchanging the most evident positions pushes the teacher towards a', the least evident towards b'.
    """
    scores = evidence.evidence_for_a.flatten()
    if not 0 <= k <= scores.numel():
        raise ValueError(f"k must be between 0 and the {scores.numel()} grid positions; got {k}")
    chosen = torch.argsort(scores, descending=most, stable=True)[:k]
    return torch.zeros(scores.numel(), dtype=torch.bool).index_fill_(0, chosen, True).view_as(evidence.delta_a)


@dataclass(frozen=True)
class TeacherCheck:
    """For one mask: the teacher the summed evidence predicts and the one the model actually chooses."""

    mask: Tensor  # bool [gh, gw]
    original_a: float  # conf(a), conf(b) of the originals (float64)
    original_b: float
    change_a: float  # sum of delta_a over the mask: the first-order change of conf(a')
    change_b: float
    actual_a: float  # conf(a'), conf(b') of the real swapped views, as ips_loss computes them
    actual_b: float
    actual_teacher: str  # "a" or "b": ips_loss's choice (a on a tie, as in training)
    agrees: bool | None  # prediction and model pick the same teacher; None when either side is a tie

    @property
    def predicted_a(self) -> float:
        return self.original_a + self.change_a

    @property
    def predicted_b(self) -> float:
        return self.original_b + self.change_b

    @property
    def predicted_teacher(self) -> str:
        """The predicted teacher: "a", "b", or "tie" when the predicted confidences are equal."""
        gap = self.predicted_a - self.predicted_b
        return "a" if gap > 0 else "b" if gap < 0 else "tie"

    @property
    def actual_tie(self) -> bool:
        return self.actual_a == self.actual_b

    def to_json(self) -> dict:
        return {"mask": self.mask.tolist(), "original_a": self.original_a, "original_b": self.original_b,
                "change_a": self.change_a, "change_b": self.change_b, "predicted_a": self.predicted_a,
                "predicted_b": self.predicted_b, "predicted_teacher": self.predicted_teacher,
                "actual_a": self.actual_a, "actual_b": self.actual_b, "actual_teacher": self.actual_teacher,
                "actual_tie": self.actual_tie, "agrees": self.agrees}


def check_teacher(model: nn.Module, dataset: Dataset, evidence: PatchEvidence, mask: Tensor) -> TeacherCheck:
    """Swap ``evidence``'s pair at ``mask`` (bool [gh, gw]); compare the predicted teacher with ips_loss's choice."""
    if mask.shape != evidence.delta_a.shape:
        raise ValueError(f"the mask must cover the {tuple(evidence.delta_a.shape)} patch grid; got {tuple(mask.shape)}")
    mask = mask.bool().cpu()
    swapped_a, swapped_b = swap_patches(evidence.image_a[None], evidence.image_b[None],
                                        mask[None].to(evidence.image_a.device))
    logits = predict_logits(model, dataset, torch.cat([swapped_a, swapped_b])).cpu()
    actual = ips_loss(logits[:1], logits[1:], torch.tensor([evidence.label]))
    change_a, change_b = _predicted_changes(evidence.delta_a[None], evidence.delta_b[None], mask[None])
    predicted_gap = _predicted_gap(torch.tensor([evidence.confidence_a], dtype=torch.float64),
                                   torch.tensor([evidence.confidence_b], dtype=torch.float64), change_a, change_b)
    agrees, tie = _agreement(predicted_gap, actual.teacher_is_a, actual.confidence_a == actual.confidence_b)
    return TeacherCheck(mask, evidence.confidence_a, evidence.confidence_b, float(change_a), float(change_b),
                        float(actual.confidence_a), float(actual.confidence_b),
                        "a" if bool(actual.teacher_is_a) else "b", None if bool(tie) else bool(agrees))


# --------------------------------------------------------------------------------------------------
# Many pairs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvidenceAgreement:
    """Over the Gaps tab's swapped test pairs: how often the summed evidence predicts the model's teacher."""

    anchors: Tensor  # [N] test indices of view a's source
    partners: Tensor  # [N]
    labels: Tensor  # [N]
    predicted_gap: Tensor  # float64 [N]: predicted conf(a') - conf(b')
    actual_gap: Tensor  # float32 [N]: conf(a') - conf(b') of the real swapped views (ips_loss)
    agrees: Tensor  # bool [N]: prediction and model pick the same teacher (never on a tie)
    tie: Tensor  # bool [N]: the predicted or the actual confidences are exactly equal

    @property
    def count(self) -> int:
        return len(self.anchors)

    @property
    def tie_count(self) -> int:
        return int(self.tie.sum())

    @property
    def agreement_count(self) -> int:
        return int(self.agrees.sum())

    @property
    def rate(self) -> float | None:
        """Agreements among the pairs without a tie; None when every pair is a tie."""
        decided = self.count - self.tie_count
        return self.agreement_count / decided if decided else None

    def to_json(self) -> dict:
        return {"count": self.count, "ties": self.tie_count, "decided": self.count - self.tie_count,
                "agreements": self.agreement_count, "rate": self.rate,
                "pairs": [{"anchor": a, "partner": p, "label": y, "predicted_gap": g, "actual_gap": r, "agrees": ok,
                           "tie": t}
                          for a, p, y, g, r, ok, t in zip(self.anchors.tolist(), self.partners.tolist(),
                                                          self.labels.tolist(), self.predicted_gap.tolist(),
                                                          self.actual_gap.tolist(), self.agrees.tolist(),
                                                          self.tie.tolist(), strict=True)]}


def evidence_forwards(n_pairs: int, cells: int) -> int:
    """The images ``evidence_agreement`` forwards for ``n_pairs`` pairs on a grid of ``cells`` positions: each image
    of a pair as it is and once per exchanged position."""
    return n_pairs * (2 * cells + 2)


def evidence_agreement(model: nn.Module, dataset: Dataset, n_pairs: int, patch_size: int, ratio: float, seed: int,
                       label: int | None = None,
                       progress: Callable[[float], None] | None = None) -> EvidenceAgreement:
    """Predicted vs actual teacher for the pairs ``confidence_gaps`` draws with the same arguments; refused beyond
    ``EVIDENCE_FORWARD_LIMIT`` images. ``progress`` is called with the fraction done after every chunk of pairs.

    A pair with a tie (the model's two swapped confidences equal, e.g. both 1.0 in float32, or the two predicted
    confidences equal) is counted in ``tie`` and left out of the rate.
    """
    height, width = dataset.image_size
    cells = (height // patch_size) * (width // patch_size) if patch_size > 0 else 0
    if cells and evidence_forwards(n_pairs, cells) > EVIDENCE_FORWARD_LIMIT:
        most = EVIDENCE_FORWARD_LIMIT // evidence_forwards(1, cells)
        raise ValueError(f"{n_pairs} pairs of {patch_size}-pixel patches need {evidence_forwards(n_pairs, cells):,} "
                         f"forward passes per model; one request may ask for {EVIDENCE_FORWARD_LIMIT:,}: use at most "
                         f"{most} pairs at this patch size, or larger patches")
    gaps = confidence_gaps(dataset, {"model": model}, n_pairs, patch_size, ratio, seed, label)
    masks = anchor_masks(dataset, patch_size, ratio, seed)[gaps.anchors]
    images = dataset.test_images
    chunk = max(1, _IMAGES_PER_FORWARD_CHUNK // (2 * masks[0].numel() + 2))
    predicted_gaps = []
    for start in range(0, len(gaps.anchors), chunk):
        part = slice(start, start + chunk)
        conf_a, conf_b, delta_a, delta_b = _single_patch_deltas(model, dataset, images[gaps.anchors[part]],
                                                                images[gaps.partners[part]], gaps.labels[part],
                                                                patch_size)
        predicted_gaps.append(_predicted_gap(conf_a, conf_b, *_predicted_changes(delta_a, delta_b, masks[part])))
        if progress is not None:
            progress(min(start + chunk, len(gaps.anchors)) / len(gaps.anchors))
    predicted_gap = torch.cat(predicted_gaps)
    actual_a, actual_b = gaps.confidence_a["model"], gaps.confidence_b["model"]
    agrees, tie = _agreement(predicted_gap, gaps.teacher_is_a["model"], actual_a == actual_b)
    return EvidenceAgreement(gaps.anchors, gaps.partners, gaps.labels, predicted_gap, actual_a - actual_b, agrees, tie)
