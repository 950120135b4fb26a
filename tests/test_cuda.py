"""The core and the training CLI on a CUDA GPU (skipped where none is present; run on a lent GPU machine)."""

import json
import signal

import pytest
import torch

from explorer.ips import build_class_index, ips_loss, patch_swap, same_class_partners
from explorer.training.config import parse_config
from explorer.training.loop import main, setup, train_step
from tests.helpers import stop_at_step

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


@pytest.mark.parametrize("method", ["ce", "cskd", "ips"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_training_step_makes_no_host_sync(method, precision):
    """CUDA's sync debug mode raises on any blocking device-to-host transfer inside the steps (an epoch's anchor
    refill included); the first two steps warm cuDNN and the caches up."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    s = setup(parse_config(["--dataset", "digits", "--method", method, "--precision", precision]))
    for _ in range(2):
        train_step(s)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(s.steps_per_epoch + 1):
            train_step(s)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(train_step(s)).all()


def test_fp16_and_channels_last_train_on_the_gpu(tmp_path):
    args = ["--dataset", "digits", "--method", "ips", "--epochs", "2", "--precision", "fp16", "--channels-last", "on",
            "--out", str(tmp_path), "--run-id", "h"]
    assert main(args) == 0
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    status = json.loads((tmp_path / "h" / "status.json").read_text())
    assert config["precision_used"] == "fp16" and status["test_accuracy"] > 0.5


def test_a_gpu_run_resumes(tmp_path, monkeypatch):
    """Stopped in epoch 2 of 3 and resumed: the run ends where the run left alone ends, up to cuDNN's
    non-determinism (on the CPU the two are bit-identical, see test_training_state.py)."""
    base = ["--dataset", "digits", "--method", "ips", "--epochs", "3", "--out", str(tmp_path)]
    assert main([*base, "--run-id", "whole"]) == 0
    stop_at_step(monkeypatch, 18)
    assert main([*base, "--run-id", "cut"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    records = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] in ("epoch", "resume")] == [1, 1, 2, 3]
    whole, cut = (json.loads((tmp_path / run / "status.json").read_text()) for run in ("whole", "cut"))
    assert cut["state"] == "finished" and abs(cut["test_accuracy"] - whole["test_accuracy"]) < 0.05
