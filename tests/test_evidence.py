"""explorer.analysis.evidence: single-patch exchange deltas, evident masks, predicted vs actual teachers."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.analysis.evidence import check_teacher, evidence_agreement, evident_mask, patch_evidence
from explorer.analysis.pairs import anchor_masks, confidence_gaps
from explorer.checkpoints import load_checkpoint
from explorer.data import load_dataset
from explorer.evaluate import predict_logits
from explorer.ips import swap_patches
from explorer.models import SmallCNN

DEMO = Path(__file__).resolve().parents[1] / "checkpoints"


class LinearScore(nn.Module):
    """logits = [w . x + bias, 0] on the normalised input x: class 0's confidence is sigmoid(w . x + bias)."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.weight).flatten(1).sum(1) + self.bias
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class TwoPatchesTogether(nn.Module):
    """On 8x8 images in 4x4 patches (top-left, top-right, bottom-left, bottom-right), with m = a patch's mean raw
    intensity in [0, 1]: logits = [10 m_TL m_TR (1 - m_BL), 0]. Fires only when TL and TR are bright and BL dark."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(x * self.std + self.mean, 4).flatten(1)  # [B, 4]: TL, TR, BL, BR
        score = self.scale * cells[:, 0] * cells[:, 1] * (1 - cells[:, 2])
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def pair(digits):
    i, j = torch.nonzero(digits.test_labels == 0).flatten()[:2].tolist()
    return digits.test_images[i], digits.test_images[j]


@pytest.fixture(scope="module")
def linear():
    return LinearScore(0.02 * torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)))


def _analytic_deltas(dataset, model, a, b, patch_size):
    """sigmoid(s_a + d_p) - sigmoid(s_a) and sigmoid(s_b - d_p) - sigmoid(s_b): s = w . x + bias,
    d_p = sum over patch p of w (x_b - x_a)."""
    w = model.weight.detach().double()[0]
    x_a, x_b = (dataset.normalize(img[None]).double()[0, 0] for img in (a, b))
    s_a, s_b = float((w * x_a).sum()) + model.bias, float((w * x_b).sum()) + model.bias
    def sigmoid(x: float) -> float:  # in double precision, like the deltas under test
        return 1.0 / (1.0 + math.exp(-x))

    grid = 8 // patch_size
    delta_a, delta_b = torch.zeros(grid, grid, dtype=torch.float64), torch.zeros(grid, grid, dtype=torch.float64)
    for r in range(grid):
        for c in range(grid):
            rows, cols = slice(r * patch_size, (r + 1) * patch_size), slice(c * patch_size, (c + 1) * patch_size)
            d = float((w[rows, cols] * (x_b[rows, cols] - x_a[rows, cols])).sum())
            delta_a[r, c] = sigmoid(s_a + d) - sigmoid(s_a)
            delta_b[r, c] = sigmoid(s_b - d) - sigmoid(s_b)
    return sigmoid(s_a), sigmoid(s_b), delta_a, delta_b


@pytest.mark.parametrize("patch_size", [2, 4])
def test_deltas_of_a_linear_model_match_the_analytic_values(digits, pair, linear, patch_size):
    a, b = pair
    evidence = patch_evidence(linear, digits, a, b, 0, patch_size)
    conf_a, conf_b, delta_a, delta_b = _analytic_deltas(digits, linear, a, b, patch_size)
    grid = 8 // patch_size
    assert evidence.delta_a.shape == (grid, grid) and evidence.delta_a.dtype == torch.float64
    assert evidence.confidence_a == pytest.approx(float(conf_a), abs=1e-6)
    assert evidence.confidence_b == pytest.approx(float(conf_b), abs=1e-6)
    assert torch.allclose(evidence.delta_a, delta_a, atol=1e-6) and torch.allclose(evidence.delta_b, delta_b, atol=1e-6)
    assert delta_a.abs().max() > 1e-3  # the patches differ: a real signal, not all zeros
    assert torch.allclose(evidence.evidence_for_a, delta_a - delta_b, atol=2e-6)


def test_most_evident_mask_predicts_and_makes_a_the_teacher_least_evident_b(digits, pair, linear):
    a, b = pair
    evidence = patch_evidence(linear, digits, a, b, 0, 2)
    most, least = evident_mask(evidence, 8), evident_mask(evidence, 8, most=False)
    assert int(most.sum()) == int(least.sum()) == 8 and not (most & least).any()  # half the grid each
    scores = evidence.evidence_for_a
    assert scores[most].min() >= scores[least].max()
    to_a, to_b = check_teacher(linear, digits, evidence, most), check_teacher(linear, digits, evidence, least)
    assert (to_a.predicted_teacher, to_a.actual_teacher, to_a.agrees) == ("a", "a", True)
    assert (to_b.predicted_teacher, to_b.actual_teacher, to_b.agrees) == ("b", "b", True)
    # near-linear sigmoid: the summed single-patch deltas predict the swapped confidences closely
    for check in (to_a, to_b):
        assert check.change_a == pytest.approx(float(evidence.delta_a[check.mask].sum()))
        assert check.predicted_a == pytest.approx(check.actual_a, abs=1e-3)
        assert check.predicted_b == pytest.approx(check.actual_b, abs=1e-3)
    # the actual values are ips_loss's: the true-class probability of the real swapped views
    swapped_a, swapped_b = swap_patches(a[None], b[None], most[None])
    probabilities = F.softmax(predict_logits(linear, digits, torch.cat([swapped_a, swapped_b])), 1)[:, 0]
    assert [to_a.actual_a, to_a.actual_b] == pytest.approx(probabilities.tolist(), abs=1e-7)


def test_confidences_near_one_keep_their_deltas(digits, pair):
    # a logit of about 25: sigmoid is exactly 1.0 in float32 and every float32 delta would be 0
    model = LinearScore(0.02 * torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)), bias=25.0)
    a, b = pair
    evidence = patch_evidence(model, digits, a, b, 0, 2)
    _, _, delta_a, delta_b = _analytic_deltas(digits, model, a, b, 2)
    assert evidence.confidence_a < 1.0 and (evidence.delta_a != 0).sum() > 8
    assert torch.allclose(evidence.delta_a, delta_a, rtol=1e-3, atol=0)
    assert torch.allclose(evidence.delta_b, delta_b, rtol=1e-3, atol=0)


def test_a_predicted_tie_tests_nothing_even_when_the_model_picks_a_teacher(digits):
    # a: TL, TR, BL bright; b: dark. Exchanging TL or TR alone makes neither fire (delta 0 there), but exchanging
    # both gives b' = TL + TR bright, BL dark: b' fires and is the teacher.
    a = torch.zeros(1, 8, 8, dtype=torch.uint8)
    a[:, :4, :], a[:, 4:, :4] = 255, 255
    b = torch.zeros_like(a)
    model = TwoPatchesTogether(digits.mean[0], digits.std[0])
    evidence = patch_evidence(model, digits, a, b, 0, 4)
    top_row = torch.tensor([[True, True], [False, False]])
    assert evidence.delta_a[top_row].abs().max() < 1e-9 and evidence.delta_b[top_row].abs().max() < 1e-9
    assert evidence.confidence_a == evidence.confidence_b == 0.5
    check = check_teacher(model, digits, evidence, top_row)
    assert check.actual_teacher == "b" and check.actual_b > 0.99 and not check.actual_tie
    assert check.predicted_teacher == "tie" and check.agrees is None


def test_batched_deltas_are_each_positions_own_swap_on_a_nonlinear_model(digits, pair):
    torch.manual_seed(0)
    model = SmallCNN(1, 10).eval()
    a, b = pair
    evidence = patch_evidence(model, digits, a, b, 3, 2)  # class 3 of a random net: confidences far from 0 and 1
    for r, c in [(0, 0), (1, 3), (3, 2)]:
        only = torch.zeros(1, 4, 4, dtype=torch.bool)
        only[0, r, c] = True
        a_with_b, b_with_a = swap_patches(a[None], b[None], only)
        logits = predict_logits(model, digits, torch.cat([a[None], b[None], a_with_b, b_with_a])).double()
        conf = F.softmax(logits, 1)[:, 3]
        assert float(evidence.delta_a[r, c]) == pytest.approx(float(conf[2] - conf[0]), abs=1e-6)
        assert float(evidence.delta_b[r, c]) == pytest.approx(float(conf[3] - conf[1]), abs=1e-6)
    assert evidence.delta_a.abs().max() > 1e-4


def test_evident_mask_orders_ties_by_position_and_refuses_bad_k(digits, pair):
    a, _ = pair
    evidence = patch_evidence(LinearScore(torch.ones(1, 8, 8)), digits, a, a, 0, 4)  # a with itself: all 0
    assert evidence.evidence_for_a.eq(0).all()
    assert evident_mask(evidence, 3).tolist() == [[True, True], [True, False]]
    assert evident_mask(evidence, 3, most=False).tolist() == [[True, True], [True, False]]
    assert not evident_mask(evidence, 0).any() and evident_mask(evidence, 4).all()
    with pytest.raises(ValueError, match="k must be between 0 and the 4 grid positions; got 5"):
        evident_mask(evidence, 5)


def test_bad_arguments_are_refused(digits, pair, linear):
    a, b = pair
    with pytest.raises(ValueError, match="patch size 3 does not divide the 8x8 images"):
        patch_evidence(linear, digits, a, b, 0, 3)
    with pytest.raises(ValueError, match="same shape"):
        patch_evidence(linear, digits, a, b[:, :4], 0, 2)
    evidence = patch_evidence(linear, digits, a, b, 0, 2)
    with pytest.raises(ValueError, match="cover the \\(4, 4\\) patch grid"):
        check_teacher(linear, digits, evidence, torch.ones(2, 2, dtype=torch.bool))


def test_json_payloads(digits, pair, linear):
    a, b = pair
    evidence = patch_evidence(linear, digits, a, b, 0, 4)
    payload = json.loads(json.dumps(evidence.to_json()))
    assert set(payload) == {"label", "patch_size", "grid", "confidence_a", "confidence_b", "delta_a", "delta_b",
                            "evidence_for_a"}
    assert payload["grid"] == [2, 2] and payload["delta_a"] == evidence.delta_a.tolist()
    check = json.loads(json.dumps(check_teacher(linear, digits, evidence, evident_mask(evidence, 2)).to_json()))
    assert set(check) == {"mask", "original_a", "original_b", "change_a", "change_b", "predicted_a", "predicted_b",
                          "predicted_teacher", "actual_a", "actual_b", "actual_teacher", "actual_tie", "agrees"}
    assert check["predicted_a"] == pytest.approx(check["original_a"] + check["change_a"])
    agreement = json.loads(json.dumps(evidence_agreement(linear, digits, 5, 4, 0.5, seed=1, label=0).to_json()))
    assert set(agreement) == {"count", "ties", "decided", "agreements", "rate", "pairs"}
    assert agreement["count"] == 5 and len(agreement["pairs"]) == 5
    assert set(agreement["pairs"][0]) == {"anchor", "partner", "label", "predicted_gap", "actual_gap", "agrees", "tie"}


def test_a_constant_model_gives_only_ties_and_no_rate(digits):
    flat = LinearScore(torch.zeros(1, 8, 8))  # every confidence 0.5: nothing to predict
    result = evidence_agreement(flat, digits, 12, 2, 0.5, seed=0, label=0)  # LinearScore has 2 classes
    assert (result.count, result.tie_count, result.agreement_count, result.rate) == (12, 12, 0, None)


def test_many_pairs_in_chunks_give_the_numbers_of_one_chunk(digits, monkeypatch):
    torch.manual_seed(0)
    model = SmallCNN(1, 10).eval()
    whole = evidence_agreement(model, digits, 10, 4, 0.5, seed=2)
    monkeypatch.setattr("explorer.analysis.evidence._IMAGES_PER_FORWARD_CHUNK", 40)  # 4 pairs x (2 + 2 x 4) images
    chunked = evidence_agreement(model, digits, 10, 4, 0.5, seed=2)
    assert torch.allclose(chunked.predicted_gap, whole.predicted_gap, atol=1e-6)
    assert torch.equal(chunked.agrees, whole.agrees)


def test_agreement_over_the_gaps_tabs_pairs_matches_one_pair_at_a_time():
    # the IPS demo model: many swapped views at exactly 1.0 in float32, so ties occur
    mnist = load_dataset("mnist5k")
    model = load_checkpoint(DEMO / "mnist5k-small_cnn-ips").model
    result = evidence_agreement(model, mnist, 20, 7, 0.5, seed=3)
    gaps = confidence_gaps(mnist, {"ce": model}, 20, 7, 0.5, seed=3)
    assert torch.equal(result.anchors, gaps.anchors) and torch.equal(result.partners, gaps.partners)
    assert torch.equal(result.actual_gap, gaps.confidence_a["ce"] - gaps.confidence_b["ce"])
    masks = anchor_masks(mnist, 7, 0.5, seed=3)
    for k in (0, 7, 19):
        anchor, partner, label = int(result.anchors[k]), int(result.partners[k]), int(result.labels[k])
        evidence = patch_evidence(model, mnist, mnist.test_images[anchor], mnist.test_images[partner], label, 7)
        check = check_teacher(model, mnist, evidence, masks[anchor])
        assert float(result.predicted_gap[k]) == pytest.approx(check.predicted_a - check.predicted_b, abs=1e-6)
        assert check.actual_teacher == ("a" if bool(gaps.teacher_is_a["ce"][k]) else "b")
        assert bool(result.agrees[k]) == bool(check.agrees) and bool(result.tie[k]) == (check.agrees is None)
    actual_tie = gaps.confidence_a["ce"] == gaps.confidence_b["ce"]
    assert torch.equal(result.tie, actual_tie | (result.predicted_gap == 0)) and 0 < result.tie_count < 20
    decided = result.count - result.tie_count
    assert result.rate == pytest.approx(int(result.agrees.sum()) / decided)
    expected = ~result.tie & ((result.predicted_gap > 0) == gaps.teacher_is_a["ce"])
    assert torch.equal(result.agrees, expected) and 0 < result.agreement_count < decided
