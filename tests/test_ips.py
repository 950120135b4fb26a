"""The core: same-class partners, patch swap and the two distillation losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.ips import (
    build_class_index,
    cskd_loss,
    ips_loss,
    patch_swap,
    random_patch_mask,
    same_class_partners,
    swap_count,
    swap_patches,
)


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, gh*gw, C*p*p], one row per patch position."""
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), -1)


def _batch(seed: int = 0, shape=(16, 3, 12, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


# ------------------------------------------------------------------ patch_swap
@pytest.mark.parametrize("patch_size,ratio", [(3, 0.5), (4, 0.25), (2, 0.9), (6, 1.0), (12, 0.5), (1, 0.3)])
def test_swap_conserves_pixels_and_keeps_unswapped_positions(patch_size, ratio):
    a, b = _batch()
    a2, b2, mask = patch_swap(a, b, patch_size, ratio, generator=torch.Generator().manual_seed(1))
    pa, pb, pa2, pb2 = (_patches(t, patch_size) for t in (a, b, a2, b2))
    m = mask.flatten(1)[..., None]
    # swapped positions hold the other image's patch, unswapped ones their own: a' u b' == a u b exactly
    assert torch.equal(torch.where(m, pb, pa), pa2)
    assert torch.equal(torch.where(m, pa, pb), pb2)
    assert torch.equal(torch.sort(torch.cat([a2, b2]).flatten()).values, torch.sort(torch.cat([a, b]).flatten()).values)
    assert torch.equal(pa2 + pb2, pa + pb)


@pytest.mark.parametrize("grid,ratio,expected", [(16, 0.5, 8), (16, 0.25, 4), (49, 0.5, 24), (9, 0.5, 4),
                                                 (9, 1 / 3, 3), (16, 0.0, 0), (16, 1.0, 16),
                                                 (9, 0.3, 3), (16, 0.6, 10), (49, 0.55, 27), (4, 0.7, 3)])
def test_exact_number_of_swapped_patches(grid, ratio, expected):
    side = int(math.isqrt(grid))
    a, b = _batch(shape=(32, 1, 2 * side, 2 * side))
    _, _, mask = patch_swap(a, b, 2, ratio, generator=torch.Generator().manual_seed(0))
    assert swap_count(ratio, grid) == expected
    assert mask.shape == (32, side, side)
    assert mask.flatten(1).sum(1).tolist() == [expected] * 32


@pytest.mark.parametrize("grid,ratio,p", [((8, 8), 0.5, 1.0), ((4, 4), 0.5, 0.7), ((7, 7), 0.3, 1.0),
                                          ((8, 8), 1 / 64, 1.0), ((3, 5), 0.8, 0.5)])
def test_the_mask_is_the_top_scores_of_the_generator_draws(grid, ratio, p):
    """The patches a pair exchanges are its round(ratio * n) highest uniform scores, drawn first, then one uniform
    per pair against p: the same masks for the same generator state, release after release."""
    n = grid[0] * grid[1]
    for seed in range(20):
        replay = torch.Generator().manual_seed(seed)
        scores = torch.rand(64, n, generator=replay)
        keep_pair = torch.rand(64, 1, generator=replay) < p
        chosen = torch.zeros(64, n, dtype=torch.bool).scatter_(1, scores.topk(swap_count(ratio, n), dim=1).indices, 1)
        expected = (chosen & keep_pair).view(64, *grid)
        assert torch.equal(random_patch_mask(64, grid, ratio, p, torch.Generator().manual_seed(seed)), expected)


def test_swap_patches_is_a_select_by_the_mask_for_every_dtype():
    for dtype in (torch.uint8, torch.int16, torch.float32, torch.float64, torch.bfloat16):
        a = (torch.rand(6, 3, 12, 8) * 100).to(dtype)
        b = (torch.rand(6, 3, 12, 8) * 100).to(dtype)
        a0, b0 = a.clone(), b.clone()
        mask = torch.rand(6, 3, 2) < 0.5
        pix = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]
        a2, b2 = swap_patches(a, b, mask)
        assert torch.equal(a2, torch.where(pix, b, a)) and torch.equal(b2, torch.where(pix, a, b)), dtype
        assert torch.equal(a, a0) and torch.equal(b, b0)  # the inputs are left as they were


def test_swap_positions_vary_between_pairs():
    a, b = _batch(shape=(64, 1, 16, 16))
    _, _, mask = patch_swap(a, b, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 60
    # every position is chosen about half the time
    assert mask.float().mean(0).min() > 0.25 and mask.float().mean(0).max() < 0.75


def test_p_zero_is_identity_and_p_selects_pairs():
    a, b = _batch(shape=(400, 1, 8, 8))
    a2, b2, mask = patch_swap(a, b, 4, 0.5, p=0.0)
    assert torch.equal(a2, a) and torch.equal(b2, b) and not mask.any()
    _, _, mask = patch_swap(a, b, 4, 0.5, p=0.3, generator=torch.Generator().manual_seed(0))
    swapped_pairs = mask.flatten(1).any(1)
    assert mask.flatten(1)[swapped_pairs].sum(1).eq(2).all()  # a selected pair swaps exactly round(0.5 * 4)
    assert 0.22 < swapped_pairs.float().mean() < 0.38


def test_mask_matches_the_pixels():
    a = torch.zeros(8, 2, 12, 8)
    b = torch.ones(8, 2, 12, 8)
    a2, b2, mask = patch_swap(a, b, 4, 0.5, generator=torch.Generator().manual_seed(3))
    expected = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(a).float()
    assert mask.shape == (8, 3, 2)
    assert torch.equal(a2, expected) and torch.equal(b2, 1 - expected)


def test_swap_is_deterministic_under_a_generator_and_varies_without():
    a, b = _batch()
    first = patch_swap(a, b, 3, 0.5, 0.7, generator=torch.Generator().manual_seed(42))
    again = patch_swap(a, b, 3, 0.5, 0.7, generator=torch.Generator().manual_seed(42))
    other = patch_swap(a, b, 3, 0.5, 0.7, generator=torch.Generator().manual_seed(43))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[2], other[2])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.bfloat16, torch.float16, torch.float64])
def test_swap_keeps_dtype(dtype):
    a = torch.zeros(4, 1, 8, 8, dtype=dtype)
    b = torch.full((4, 1, 8, 8), 7, dtype=dtype)
    a2, b2, _ = patch_swap(a, b, 2, 0.5, generator=torch.Generator().manual_seed(0))
    assert a2.dtype == dtype and b2.dtype == dtype
    assert (a2 == b[0, 0, 0, 0]).sum() == (b2 == 0).sum() == 4 * 8 * 4


def test_swap_moves_special_float_values_exactly():
    a = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    a2, b2, mask = patch_swap(a, b, 1, 1.0)
    assert mask.all() and torch.equal(a2, b)
    assert torch.equal(b2.view(torch.int32), a.view(torch.int32))  # bit-exact, NaN and -0.0 included


@pytest.mark.parametrize("kwargs,message", [
    ({"patch_size": 5},
     r"patch size 5 does not divide the 12x12 images; use one of \[1, 2, 3, 4, 6, 12\]"),
    ({"patch_size": 0}, "patch size must be a positive integer"),
    ({"patch_size": 2.0}, "patch size must be a positive integer"),
    ({"patch_size": 4, "ratio": 1.5}, r"swap ratio must be in \[0, 1\]"),
    ({"patch_size": 4, "ratio": -0.1}, r"swap ratio must be in \[0, 1\]"),
    ({"patch_size": 4, "p": 2.0}, r"swap probability p must be in \[0, 1\]"),
])
def test_swap_rejects_bad_arguments(kwargs, message):
    a, b = _batch()
    with pytest.raises(ValueError, match=message):
        patch_swap(a, b, **kwargs)


def test_patch_swap_is_random_patch_mask_then_swap_patches():
    a, b = _batch(shape=(10, 2, 12, 8))
    a2, b2, mask = patch_swap(a, b, 4, 0.5, 0.6, generator=torch.Generator().manual_seed(9))
    same_mask = random_patch_mask(10, (3, 2), 0.5, 0.6, generator=torch.Generator().manual_seed(9))
    assert torch.equal(mask, same_mask)
    a3, b3 = swap_patches(a, b, same_mask)
    assert torch.equal(a2, a3) and torch.equal(b2, b3)


def test_swap_patches_rejects_a_mask_that_does_not_tile_the_images():
    a, b = _batch(shape=(4, 1, 12, 12))
    with pytest.raises(ValueError, match=r"tile the 12x12 images of 4 pairs into square patches; got \(4, 5, 5\)"):
        swap_patches(a, b, torch.zeros(4, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="square patches"):
        swap_patches(a, b, torch.zeros(4, 3, 4, dtype=torch.bool))


def test_swap_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        patch_swap(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), 4)


# ------------------------------------------------------------------ partners
def test_partners_are_same_class_and_never_self():
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 3, 2, 1, 0, 4, 4])  # class 3 has a single sample
    index = build_class_index(labels)
    anchors = torch.arange(len(labels)).repeat(200)
    partners = same_class_partners(anchors, index, torch.Generator().manual_seed(0))
    assert torch.equal(labels[partners], labels[anchors])
    single = labels[anchors] == 3
    assert torch.equal(partners[single], anchors[single])
    assert (partners[~single] != anchors[~single]).all()


def test_partners_cover_every_other_member_uniformly():
    labels = torch.tensor([0] * 5 + [1] * 3)
    index = build_class_index(labels)
    anchors = torch.full((6000,), 2)  # a member of class 0 sitting in the middle of its group
    partners = same_class_partners(anchors, index, torch.Generator().manual_seed(0))
    counts = torch.bincount(partners, minlength=8)
    assert counts[2] == 0 and counts[5:].sum() == 0
    assert counts[[0, 1, 3, 4]].min() > 1300  # 1500 expected each


def test_partners_are_deterministic_and_use_the_whole_dataset():
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    index = build_class_index(labels, num_classes=10)
    anchors = torch.arange(100)
    p1 = same_class_partners(anchors, index, torch.Generator().manual_seed(5))
    p2 = same_class_partners(anchors, index, torch.Generator().manual_seed(5))
    assert torch.equal(p1, p2)
    assert (p1 >= 100).float().mean() > 0.8  # drawn from all 1000 samples, not from the batch


def test_class_index_layout():
    labels = torch.tensor([2, 0, 2, 1, 0])
    index = build_class_index(labels)
    assert index.counts.tolist() == [2, 1, 2]
    assert index.offsets.tolist() == [0, 2, 3]
    assert index.sorted_indices.tolist() == [1, 4, 3, 0, 2]
    assert index.rank.tolist() == [0, 0, 1, 0, 1]


# ------------------------------------------------------------------ losses
def _kl(p_logits, q_logits, t):
    p = F.softmax(torch.tensor(p_logits) / t, 0)
    q = F.softmax(torch.tensor(q_logits) / t, 0)
    return float((p * (p.log() - q.log())).sum()) * t * t


def test_ips_loss_against_a_hand_computation():
    logits_a = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    logits_b = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([0, 2])
    t = 2.0
    out = ips_loss(logits_a, logits_b, targets, temperature=t, kd_weight=0.5)
    # pair 0: p_a(0) = e^2/(e^2+1+e^-1) = 0.8438 > p_b(0) = e/(e+e^.5+1) = 0.5065 -> a teaches
    # pair 1: p_a(2) = 0.3672 < p_b(2) = 0.9094 -> b teaches
    assert out.confidence_a.tolist() == pytest.approx([0.843795, 0.367165], abs=1e-5)
    assert out.confidence_b.tolist() == pytest.approx([0.506480, 0.909443], abs=1e-5)
    assert out.teacher_is_a.tolist() == [True, False]
    kd0 = _kl([2.0, 0.0, -1.0], [1.0, 0.5, 0.0], t)
    kd1 = _kl([0.0, 0.0, 3.0], [0.1, 0.2, 0.3], t)
    assert out.kd_per_pair.tolist() == pytest.approx([kd0, kd1], rel=1e-5)
    ce_a = -math.log(0.843795) - math.log(0.367165)
    ce_b = -math.log(0.506480) - math.log(0.909443)
    ce = (ce_a / 2 + ce_b / 2) / 2
    assert float(out.ce) == pytest.approx(ce, rel=1e-5)
    assert float(out.kd) == pytest.approx((kd0 + kd1) / 2, rel=1e-5)
    assert float(out.total) == pytest.approx(ce + 0.5 * (kd0 + kd1) / 2, rel=1e-5)


def test_the_teacher_is_the_view_surer_of_the_true_class_not_the_surer_view():
    # view a is very sure of class 0, view b less sure, but of the true class 2: b teaches
    logits_a = torch.tensor([[3.0, 0.0, 1.0]])
    logits_b = torch.tensor([[0.0, 0.0, 1.5]])
    out = ips_loss(logits_a, logits_b, torch.tensor([2]), temperature=2.0)
    p_a, p_b = F.softmax(logits_a, 1)[0], F.softmax(logits_b, 1)[0]
    assert p_a.max() > p_b.max() and p_b[2] > p_a[2]  # the two rules disagree on this pair
    assert out.teacher_is_a.tolist() == [False]
    assert out.kd_per_pair.tolist() == pytest.approx([_kl([0.0, 0.0, 1.5], [3.0, 0.0, 1.0], 2.0)], rel=1e-5)


def test_ips_tie_goes_to_view_a():
    logits = torch.tensor([[1.0, 2.0]])
    out = ips_loss(logits, logits.clone(), torch.tensor([1]))
    assert out.teacher_is_a.tolist() == [True]
    assert float(out.kd) == pytest.approx(0.0, abs=1e-7)


def test_no_kd_gradient_reaches_the_teacher():
    logits_a = torch.tensor([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)
    logits_b = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    out = ips_loss(logits_a, logits_b, torch.tensor([0, 1]))
    assert out.teacher_is_a.tolist() == [True, False]
    out.kd.backward()
    # a teaches pair 0, b teaches pair 1: those rows get no gradient from the KD term
    assert torch.equal(logits_a.grad[0], torch.zeros(2)) and torch.equal(logits_b.grad[1], torch.zeros(2))
    assert logits_b.grad[0].abs().sum() > 0 and logits_a.grad[1].abs().sum() > 0


def test_total_gradient_of_teacher_is_its_cross_entropy_only():
    logits_a = torch.tensor([[3.0, 0.0, 1.0]], requires_grad=True)
    logits_b = torch.tensor([[0.0, 0.5, 1.0]], requires_grad=True)
    targets = torch.tensor([0])
    ips_loss(logits_a, logits_b, targets).total.backward()
    expected = torch.autograd.grad(0.5 * F.cross_entropy(logits_a, targets), logits_a)[0]
    assert torch.allclose(logits_a.grad, expected)


def test_cskd_loss_against_a_hand_computation():
    anchor = torch.tensor([[0.5, 1.5, -0.5]], requires_grad=True)
    partner = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([1])
    out = cskd_loss(anchor, partner, targets, temperature=4.0, kd_weight=2.0)
    out_values = {k: float(getattr(out, k).detach()) for k in ("ce", "kd", "total")}
    ce = -math.log(math.exp(1.5) / (math.exp(0.5) + math.exp(1.5) + math.exp(-0.5)))
    kd = _kl([2.0, 0.0, 0.0], [0.5, 1.5, -0.5], 4.0)
    assert out_values == pytest.approx({"ce": ce, "kd": kd, "total": ce + 2.0 * kd}, rel=1e-5)
    out.total.backward()
    assert partner.grad is None or torch.equal(partner.grad, torch.zeros_like(partner))
    assert anchor.grad.abs().sum() > 0


def test_losses_reject_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="expected logits"):
        ips_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be positive"):
        cskd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), temperature=0)


def test_margin_teacher_differs_from_the_probability_teacher_where_they_rank_differently():
    # view a: p(0) = 1/(1 + e^-0.2) = 0.550, margin 0.2; view b: p(0) = e/(e + 2e^0.5) = 0.452, margin 0.5
    logits_a, logits_b = torch.tensor([[2.0, 1.8, -10.0]]), torch.tensor([[1.0, 0.5, 0.5]])
    targets = torch.tensor([0])
    by_probability = ips_loss(logits_a, logits_b, targets)
    by_margin = ips_loss(logits_a, logits_b, targets, teacher_by="margin")
    assert by_probability.confidence_a.tolist() == pytest.approx([0.549834], abs=1e-5)
    assert by_probability.confidence_b.tolist() == pytest.approx([0.451863], abs=1e-5)
    assert by_probability.teacher_is_a.tolist() == [True] and by_margin.teacher_is_a.tolist() == [False]
    assert float(by_margin.kd) == pytest.approx(_kl([1.0, 0.5, 0.5], [2.0, 1.8, -10.0], 4.0), rel=1e-5)
    with pytest.raises(ValueError, match="teacher_by must be one of"):
        ips_loss(logits_a, logits_b, targets, teacher_by="max")


def test_correct_teacher_only_drops_the_kd_of_pairs_whose_teacher_is_wrong():
    # pair 0: a teaches and predicts class 0 (right); pair 1: b teaches (p(0) 0.269 > 0.119) but predicts 1 (wrong)
    logits_a = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    logits_b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    every = ips_loss(logits_a, logits_b, targets, temperature=2.0)
    correct_only = ips_loss(logits_a, logits_b, targets, temperature=2.0, correct_teacher_only=True)
    assert every.teacher_is_a.tolist() == correct_only.teacher_is_a.tolist() == [True, False]
    kd0 = _kl([3.0, 0.0], [1.0, 0.0], 2.0)
    assert every.kd_per_pair.tolist() == pytest.approx([kd0, _kl([0.0, 1.0], [0.0, 2.0], 2.0)], rel=1e-5)
    assert correct_only.kd_per_pair.tolist() == pytest.approx([kd0, 0.0], rel=1e-5)
    assert float(correct_only.kd) == pytest.approx(kd0 / 2, rel=1e-5)  # the mean over all pairs, zeros included
    assert float(correct_only.ce) == float(every.ce)
