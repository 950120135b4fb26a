"""The core and the training CLI on a CUDA GPU (skipped where none is present; run on a lent GPU machine)."""

import json

import pytest
import torch

from explorer.ips import build_class_index, ips_loss, patch_swap, same_class_partners
from explorer.training.loop import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_swap_and_partners_on_the_gpu_with_a_gpu_generator():
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device="cuda")
    b = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device="cuda")
    a2, b2, mask = patch_swap(a, b, 8, 0.5, generator=g)
    assert a2.device.type == "cuda" and mask.flatten(1).sum(1).eq(8).all()
    pix = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None]
    assert torch.equal(a2, torch.where(pix, b, a)) and torch.equal(b2, torch.where(pix, a, b))
    labels = torch.randint(0, 10, (5000,), device="cuda")
    index = build_class_index(labels, 10)
    anchors = torch.arange(5000, device="cuda")
    partners = same_class_partners(anchors, index, g)
    assert torch.equal(labels[partners], labels) and (partners != anchors).all()


def test_ips_loss_on_the_gpu_matches_the_cpu():
    logits_a, logits_b = torch.randn(2, 64, 10).unbind(0)
    targets = torch.randint(0, 10, (64,))
    cpu = ips_loss(logits_a, logits_b, targets)
    gpu = ips_loss(logits_a.cuda(), logits_b.cuda(), targets.cuda())
    assert torch.equal(cpu.teacher_is_a, gpu.teacher_is_a.cpu())
    assert torch.allclose(cpu.total, gpu.total.cpu(), atol=1e-5)


def test_training_picks_the_gpu_by_default(tmp_path):
    args = ["--dataset", "digits", "--method", "ips", "--epochs", "2", "--out", str(tmp_path), "--run-id", "g"]
    assert main(args) == 0
    status = json.loads((tmp_path / "g" / "status.json").read_text())
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert status["state"] == "finished" and status["device"].startswith("cuda")
    assert config["environment"]["device"].startswith("cuda") and status["test_accuracy"] > 0.5
