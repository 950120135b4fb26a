"""The field's method records: each step's loss at the record's official defaults (against the transcriptions of
``test_method_losses``), the state PS-KD and DLB keep, the images a step costs, and kd's teacher."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from explorer.training.config import TrainConfig, build_parser, step_anchors, step_images
from explorer.training.method_losses import mixed_ce, mixup_batch
from explorer.training.methods import METHODS, MethodContext, StepBatch
from tests.test_method_losses import (
    _ce,
    _log_softmax,
    _official_bake,
    _official_dlb,
    _official_label_smooth,
    _official_pskd,
    _official_tfkd_reg,
    _official_zipf,
    _softmax,
)

K, B = 5, 8


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, K)).double()


def _batch(method: str, seed: int = 0, model: nn.Module | None = None, context: MethodContext | None = None,
           **cfg) -> StepBatch:
    g = torch.Generator().manual_seed(seed)
    model = model or _model()
    anchors = torch.randint(0, 256, (B, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.randint(K, (B,), generator=g)
    partners = torch.randint(0, 256, (METHODS[method].partners * B, 1, 4, 4), dtype=torch.uint8, generator=g)
    return StepBatch(anchors=anchors, partners=partners if METHODS[method].partners else None, targets=labels,
                     shard=slice(None), forward=lambda x: model(x.double() / 255.0), cfg=TrainConfig(method=method,
                     **cfg), patch_size=2, generator=torch.Generator().manual_seed(seed + 1), labels=labels,
                     raw=anchors, indices=torch.arange(B) * 3, augment=lambda x: x.flip(3),
                     context=context or MethodContext(model=model))


def _logits(batch: StepBatch, images: torch.Tensor | None = None) -> np.ndarray:
    return batch.forward(batch.anchors if images is None else images).detach().numpy()


@pytest.mark.parametrize(("method", "reference"), [
    ("ls", lambda z, y: _official_label_smooth(z, y, 0.1)),
    ("tfkd", lambda z, y: _official_tfkd_reg(z, y, 0.1, 20.0, 100.0)),
    ("zipf", lambda z, y: _official_zipf(z, y, 0.1, 1.0)),
])
def test_single_view_methods_use_their_official_defaults(method, reference):
    batch = _batch(method)
    out = METHODS[method].step(batch)
    assert float(out.loss.detach()) == pytest.approx(reference(_logits(batch), batch.targets.numpy()), rel=1e-9)


def test_mixup_step_mixes_with_alpha_0_4_and_trains_on_the_mixed_targets():
    batch = _batch("mixup", seed=3)
    out = METHODS["mixup"].step(batch)
    mixed, perm, lam = mixup_batch(batch.anchors, 0.4, torch.Generator().manual_seed(4))  # the step's draws
    expected = mixed_ce(batch.forward(mixed), batch.targets, batch.targets[perm], lam)
    assert float(out.loss.detach()) == pytest.approx(float(expected.total), rel=1e-12)
    other_alpha = mixup_batch(batch.anchors, 1.0, torch.Generator().manual_seed(4))[2]
    assert float(other_alpha) != pytest.approx(float(lam))  # the test would notice another alpha


def test_pskd_step_mixes_last_epochs_predictions_and_stores_this_steps():
    model = _model()
    buffer = torch.softmax(torch.randn(3 * B, K, generator=torch.Generator().manual_seed(5), dtype=torch.float64), 1)
    context = MethodContext(state={"pskd.predictions": buffer.clone()}, epoch=3, model=model)
    batch = _batch("pskd", model=model, context=context, epochs=10)
    out = METHODS["pskd"].step(batch)
    z, rows = _logits(batch), batch.indices
    assert float(out.loss.detach()) == pytest.approx(_official_pskd(z, batch.targets.numpy(), buffer[rows].numpy(),
                                                           0.8 * 3 / 10), rel=1e-10)
    stored = context.state["pskd.predictions"]
    assert np.allclose(stored[rows].numpy(), _softmax(z))
    untouched = torch.ones(3 * B, dtype=torch.bool).index_fill_(0, rows, False)
    assert torch.equal(stored[untouched], buffer[untouched])


def test_pskd_buffer_starts_as_the_one_hot_labels():
    state = METHODS["pskd"].initial_state(torch.tensor([2, 0, 4]), K)
    assert state["pskd.predictions"].tolist() == torch.eye(K)[[2, 0, 4]].tolist()


def test_dlb_first_step_is_ce_and_the_next_is_taught_by_the_stashed_logits():
    model = _model()
    context = MethodContext(model=model)
    first = _batch("dlb", seed=6, model=model, context=context)
    out = METHODS["dlb"].step(first)
    z1 = _logits(first)
    assert float(out.loss.detach()) == pytest.approx(_ce(z1, first.targets.numpy()), rel=1e-12) and float(out.kd) == 0
    assert torch.equal(context.state["dlb.images"], first.raw) and np.allclose(context.state["dlb.logits"], z1)

    second = _batch("dlb", seed=7, model=model, context=context)
    out = METHODS["dlb"].step(second)
    z2, z_last = _logits(second), _logits(second, first.raw.flip(3))  # the last batch's second view
    expected = _official_dlb(z2, second.targets.numpy(), z_last, first.targets.numpy(), z1, 3.0, 1.0)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-10)
    assert torch.equal(context.state["dlb.images"], second.raw)


def test_bake_step_ensembles_anchors_and_partners_by_their_penultimate_features():
    model = _model()
    batch = _batch("bake", seed=8, model=model, temperature=2.0, kd_weight=0.5)
    out = METHODS["bake"].step(batch)
    images = torch.cat([batch.anchors, batch.partners])
    z = _logits(batch, images)
    features = model[:3](images.double() / 255.0).detach().numpy()  # the input of the last Linear
    expected = _official_bake(features, z, batch.targets.repeat(4).numpy(), 2.0, 0.5, 0.5)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_kd_step_distils_the_teachers_logits_with_the_kd_flags():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, K)).double()
    context = MethodContext(teacher=lambda x: teacher(x.double() / 255.0), model=_model())
    batch = _batch("kd", context=context, temperature=2.0, kd_weight=0.3, teacher="t")
    out = METHODS["kd"].step(batch)
    z, t = _logits(batch), teacher(batch.anchors.double() / 255.0).detach().numpy()
    q = _softmax(t / 2.0)
    kl = np.sum(q * (np.log(q) - _log_softmax(z / 2.0))) / B * 4.0
    assert float(out.loss.detach()) == pytest.approx(_ce(z, batch.targets.numpy()) + 0.3 * kl, rel=1e-10)


@pytest.mark.parametrize(("method", "equal", "anchors", "images"), [
    ("ce", False, 128, 128), ("ls", True, 128, 128), ("mixup", False, 128, 128), ("cutmix", False, 128, 128),
    ("tfkd", False, 128, 128), ("pskd", False, 128, 128), ("zipf", False, 128, 128), ("kd", False, 128, 128),
    ("ips", False, 128, 256), ("ips", True, 64, 128), ("dlb", False, 128, 256), ("dlb", True, 64, 128),
    ("bake", False, 32, 128), ("bake", True, 32, 128),
])
def test_images_per_step(method, equal, anchors, images):
    cfg = dataclasses.replace(TrainConfig(), method=method, equal_compute=equal, batch_size=128)
    assert (step_anchors(cfg), step_images(cfg)) == (anchors, images)


def test_every_method_has_its_own_colour_and_a_line_in_the_help(monkeypatch):
    assert len({m.colour for m in METHODS.values()}) == len(METHODS)
    monkeypatch.setenv("COLUMNS", "100000")  # one line per flag: no wrapping inside a method's help
    help_text = build_parser().format_help()
    assert all(f"{name}: {m.help}" in help_text for name, m in METHODS.items())
