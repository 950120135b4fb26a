"""The field's losses against independent transcriptions of their authors' official code, on random logits.

Each reference below re-writes the official formula in NumPy (float64), line by line as the repository computes
it, without any function of ``explorer``; the loss must match it and its parts must add up as its docstring says,
for hyper-parameters other than the defaults, so that a wrong weight, temperature, target or detach fails.
"""

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from explorer.ips import build_class_index, cskd_loss
from explorer.training.method_losses import (
    bake_loss,
    cutmix_batch,
    distinct_partners,
    dlb_loss,
    label_smoothing_loss,
    mixed_ce,
    mixup_batch,
    pskd_loss,
    sample_beta,
    tfkd_reg_loss,
    zipf_loss,
)

N, K = 12, 7


def _logits(seed: int, n: int = N, k: int = K, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _targets(seed: int, n: int = N, k: int = K) -> torch.Tensor:
    return torch.randint(k, (n,), generator=torch.Generator().manual_seed(seed + 1000))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(z))


def _ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-_log_softmax(z)[np.arange(len(y)), y].mean())


# --- label smoothing: Self-KD-Lib methods/label_smooth.py ---------------------------------------------------------
def _official_label_smooth(z: np.ndarray, y: np.ndarray, epsilon: float) -> float:
    n, k = z.shape
    smoothed = np.full((n, k), epsilon / (k - 1))
    smoothed[np.arange(n), y] = 1 - epsilon
    return float(-np.sum(_log_softmax(z) * smoothed) / n)


@pytest.mark.parametrize("epsilon", [0.1, 0.35])
def test_label_smoothing_matches_self_kd_lib(epsilon):
    z, y = _logits(1), _targets(1)
    out = label_smoothing_loss(z, y, epsilon)
    assert float(out.total.detach()) == pytest.approx(_official_label_smooth(_np(z), y.numpy(), epsilon), rel=1e-10)
    assert float(out.ce) == pytest.approx(_ce(_np(z), y.numpy()), rel=1e-10)
    assert float(out.total.detach()) == pytest.approx(float((1 - epsilon) * out.ce + epsilon * out.kd), rel=1e-10)


# --- Tf-KD_reg: yuanli2333/Teacher-free-Knowledge-Distillation my_loss_function.py -----------------------------------
def _official_tfkd_reg(z: np.ndarray, y: np.ndarray, alpha: float, temperature: float, multiplier: float) -> float:
    n, k = z.shape
    correct_prob = 0.99
    teacher_soft = np.ones((n, k)) * (1 - correct_prob) / (k - 1)
    for i in range(n):
        teacher_soft[i, y[i]] = correct_prob
    q = _softmax(teacher_soft / temperature)
    kl_mean = np.mean(q * (np.log(q) - _log_softmax(z)))  # nn.KLDivLoss(): the mean over every element
    return (1 - alpha) * _ce(z, y) + alpha * kl_mean * multiplier


def test_tfkd_reg_matches_the_official_loss_at_its_defaults_and_at_other_values():
    z, y = _logits(2), _targets(2)
    default = tfkd_reg_loss(z, y)
    assert float(default.total) == pytest.approx(_official_tfkd_reg(_np(z), y.numpy(), 0.1, 20.0, 100.0), rel=1e-9)
    other = tfkd_reg_loss(z, y, alpha=0.3, temperature=5.0, multiplier=7.0)
    assert float(other.total) == pytest.approx(_official_tfkd_reg(_np(z), y.numpy(), 0.3, 5.0, 7.0), rel=1e-9)
    assert float(other.total) == pytest.approx(float(0.7 * other.ce + 0.3 * other.kd), rel=1e-10)


# --- PS-KD: lgcnsai/PS-KD-Pytorch main.py + loss/pskd_loss.py -------------------------------------------------------
def _official_pskd(z: np.ndarray, y: np.ndarray, previous: np.ndarray, alpha_t: float) -> float:
    one_hot = np.eye(z.shape[1])[y]
    soft_targets = (1 - alpha_t) * one_hot + alpha_t * previous
    return float((-soft_targets * _log_softmax(z)).mean(axis=0).sum())


def test_pskd_matches_the_official_loss_and_never_trains_the_buffer():
    z, y = _logits(3).requires_grad_(), _targets(3)
    previous = torch.softmax(_logits(4), dim=1).requires_grad_()
    out = pskd_loss(z, y, previous, alpha_t=0.45)
    assert float(out.total.detach()) == pytest.approx(_official_pskd(_np(z), y.numpy(), _np(previous), 0.45), rel=1e-10)
    assert float(out.total.detach()) == pytest.approx(float((0.55 * out.ce + 0.45 * out.kd).detach()), rel=1e-10)
    out.total.backward()
    assert previous.grad is None and z.grad.abs().sum() > 0


# --- DLB: Meta-knowledge-Lab/DLB dlb.py train_one_epoch ---------------------------------------------------------------
def _official_dlb(out: np.ndarray, label: np.ndarray, out_pre: np.ndarray, pre_label: np.ndarray,
                  pre_out: np.ndarray, temperature: float, alpha: float) -> float:
    ce = _ce(np.concatenate([out_pre, out]), np.concatenate([pre_label, label]))
    q = _softmax(pre_out / temperature)
    kl = np.sum(q * (np.log(q) - _log_softmax(out_pre / temperature))) / len(out_pre)  # batchmean
    return ce + alpha * kl * temperature * temperature


def test_dlb_matches_the_official_loss_and_the_stashed_logits_get_no_gradient():
    out, out_pre = _logits(5).requires_grad_(), _logits(6).requires_grad_()
    label, pre_label = _targets(5), _targets(6)
    pre_out = _logits(7).requires_grad_()
    parts = dlb_loss(out, label, out_pre, pre_label, pre_out, temperature=2.5, weight=0.6)
    expected = _official_dlb(_np(out), label.numpy(), _np(out_pre), pre_label.numpy(), _np(pre_out), 2.5, 0.6)
    assert float(parts.total.detach()) == pytest.approx(expected, rel=1e-10)
    assert float(parts.total.detach()) == pytest.approx(float(parts.ce + 0.6 * parts.kd), rel=1e-10)
    parts.total.backward()
    assert pre_out.grad is None and out_pre.grad.abs().sum() > 0 and out.grad.abs().sum() > 0


# --- Zipf's LS: megvii-research/zipfls losses.py (rank_zipf, hard rank, no dense votes) -------------------------------
def _official_zipf(z: np.ndarray, y: np.ndarray, weight: float, power: float) -> float:
    n, c = z.shape
    mask = np.ones((n, c))
    mask[np.arange(n), y] = 0
    rank = rankdata(-z, axis=1, method="min")
    dist = (1 / rank) ** power
    dist = dist[mask.astype(bool)].reshape((n, c - 1))
    dist = dist / dist.sum(axis=1, keepdims=True)
    res = _log_softmax(z[mask.astype(bool)].reshape((n, c - 1)))
    kd = float(np.mean(np.sum(dist * (np.log(dist) - res), axis=1)))
    return _ce(z, y) + weight * kd


def test_zipf_matches_the_official_loss_with_tied_logits():
    z, y = _logits(8), _targets(8)
    z[0, 1] = z[0, 2] = z[0, 4]  # a three-way tie: scipy's "min" ranks share the smallest rank
    z[3, :] = torch.tensor([1.0, 1.0, 0.0, 0.0, -1.0, 2.0, 2.0], dtype=torch.float64)
    for weight, power in ((0.1, 1.0), (0.7, 1.5)):
        parts = zipf_loss(z, y, weight, power)
        assert float(parts.total.detach()) == pytest.approx(_official_zipf(_np(z), y.numpy(), weight, power), rel=1e-10)
        assert float(parts.total.detach()) == pytest.approx(float(parts.ce + weight * parts.kd), rel=1e-10)


# --- BAKE: yxgeee/BAKE small_scale/train.py ---------------------------------------------------------------------------
def _official_bake(feats: np.ndarray, z: np.ndarray, y: np.ndarray, temperature: float, omega: float,
                   lamda: float) -> float:
    n = z.shape[0]
    masks = np.eye(n)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    probs = _softmax(z / temperature)
    w = _softmax(feats @ feats.T - masks * 1e9)
    w = (1 - omega) * np.linalg.inv(masks - omega * w)
    kd_targets = w @ probs
    kd = np.sum(kd_targets * (np.log(kd_targets) - _log_softmax(z / temperature))) * temperature**2 / n
    return _ce(z, y) + lamda * kd


def test_bake_matches_the_official_loss_and_the_ensemble_gets_no_gradient():
    z, y = _logits(10).requires_grad_(), _targets(10)
    feats = _logits(11, k=16).requires_grad_()
    for temperature, omega, weight in ((4.0, 0.5, 1.0), (2.0, 0.8, 0.4)):
        parts = bake_loss(z, feats, y, temperature, omega, weight)
        expected = _official_bake(_np(feats), _np(z), y.numpy(), temperature, omega, weight)
        assert float(parts.total.detach()) == pytest.approx(expected, rel=1e-6)
        assert float(parts.total.detach()) == pytest.approx(float(parts.ce + weight * parts.kd), rel=1e-10)
    parts.total.backward()
    assert feats.grad is None
    # with the ensemble detached, the KD gradient is (softmax(z / T) - target) * T / N per sample
    z.grad = None
    parts = bake_loss(z, feats, y, 2.0, 0.8, 1.0)
    parts.kd.backward()
    from explorer.training.method_losses import knowledge_ensemble
    target = knowledge_ensemble(feats, z, 2.0, 0.8).double()
    assert torch.allclose(z.grad, (torch.softmax(z.detach() / 2.0, dim=1) - target) * 2.0 / len(z), atol=1e-6)


# --- KD (Hinton): CE + w x KL(teacher || student) x T^2, batchmean ---------------------------------------------------
def test_kd_is_ce_plus_weighted_kl_at_temperature():
    z, y = _logits(12).requires_grad_(), _targets(12)
    teacher = _logits(13).requires_grad_()
    out = cskd_loss(z, teacher, y, temperature=3.0, kd_weight=0.7)
    q = _softmax(_np(teacher) / 3.0)
    kl = np.sum(q * (np.log(q) - _log_softmax(_np(z) / 3.0))) / N * 9.0
    assert float(out.total.detach()) == pytest.approx(_ce(_np(z), y.numpy()) + 0.7 * kl, rel=1e-10)
    out.total.backward()
    assert teacher.grad is None


# --- Mixup and CutMix -----------------------------------------------------------------------------------------------
def test_mixed_ce_weights_the_two_targets_by_lambda():
    z, y, y2 = _logits(14), _targets(14), _targets(15)
    lam = torch.tensor(0.3, dtype=torch.float64)
    parts = mixed_ce(z, y, y2, lam)
    assert float(parts.total.detach()) == pytest.approx(0.3 * _ce(_np(z), y.numpy()) + 0.7 * _ce(_np(z), y2.numpy()),
                                               rel=1e-10)


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_sample_beta_draws_beta_alpha_alpha(alpha):
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_beta(alpha, generator, torch.device("cpu")) for _ in range(3000)]).double()
    variance = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(draws.var()) == pytest.approx(variance, rel=0.08)
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1


def test_mixup_mixes_images_with_a_permutation_by_lambda():
    images = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mixed, perm, lam = mixup_batch(images, 0.4, torch.Generator().manual_seed(2))
    assert sorted(perm.tolist()) == list(range(8)) and 0 <= float(lam) <= 1
    assert torch.allclose(mixed, lam * images.float() + (1 - lam) * images[perm].float())


def _torchvision_cutmix_box(lam: float, r_x: int, r_y: int, h: int, w: int) -> tuple[int, int, int, int, float]:
    """torchvision.transforms.v2.CutMix._get_params, transcribed."""
    r = 0.5 * np.sqrt(1.0 - lam)
    r_w_half, r_h_half = int(r * w), int(r * h)
    x1, y1 = max(r_x - r_w_half, 0), max(r_y - r_h_half, 0)
    x2, y2 = min(r_x + r_w_half, w), min(r_y + r_h_half, h)
    return x1, y1, x2, y2, float(1.0 - (x2 - x1) * (y2 - y1) / (w * h))


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_pastes_torchvisions_box_from_the_rolled_batch(seed):
    h, w = 10, 14
    images = torch.randint(0, 256, (5, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    mixed, partner, lam = cutmix_batch(images, 1.0, torch.Generator().manual_seed(seed))
    replay = torch.Generator().manual_seed(seed)  # alpha = 1: lam is one uniform draw, then the centre (y, x)
    raw_lam = float(torch.rand((), generator=replay))
    centre = torch.rand(2, generator=replay)
    x1, y1, x2, y2, expected_lam = _torchvision_cutmix_box(raw_lam, int(centre[1] * w), int(centre[0] * h), h, w)
    expected = images.clone()
    expected[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
    assert torch.equal(mixed, expected) and partner.tolist() == [4, 0, 1, 2, 3]
    assert float(lam) == pytest.approx(expected_lam, abs=1e-6)


def test_bake_partners_are_distinct_members_of_the_anchors_class():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 2)
    index = build_class_index(labels, 3)
    anchors = torch.arange(len(labels)).repeat(20)
    partners = distinct_partners(anchors, index, 3, torch.Generator().manual_seed(0))
    assert partners.shape == (3, len(anchors))
    assert torch.equal(labels[partners], labels[anchors].expand(3, -1))
    big = labels[anchors] == 0  # 5 others: 3 distinct partners, never the anchor
    assert (partners[:, big] != anchors[big]).all()
    assert all(len(set(col)) == 3 for col in partners[:, big].T.tolist())
    seen = set(zip(anchors[big].tolist(), partners[0, big].tolist(), strict=True))
    assert len(seen) == 6 * 5  # every other member drawn as a first partner at some point
    small = labels[anchors] == 2  # indices 9 and 10: one other member, drawn three times (with replacement)
    assert (partners[:, small] == 19 - anchors[small]).all()
